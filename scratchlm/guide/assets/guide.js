// scratchlm guide: theme, search, stage map highlighting, keyboard navigation, snippet folding, print.
(function () {
  "use strict";
  const root = document.documentElement;
  const stages = Array.from(document.querySelectorAll("section.stage"));
  const mapLinks = Array.from(document.querySelectorAll("nav.map a[data-target]"));

  // ---- light / dark: the reader's choice is remembered; the first visit follows the system setting
  const themeButton = document.getElementById("theme");
  function store(key, value) { try { localStorage.setItem(key, value); } catch (e) { /* file:// may refuse */ } }
  function recall(key) { try { return localStorage.getItem(key); } catch (e) { return null; } }
  function setTheme(t) {
    root.setAttribute("data-theme", t);
    themeButton.textContent = t === "dark" ? "light" : "dark";
  }
  const dark = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
  setTheme(recall("scratchlm-guide-theme") || (dark ? "dark" : "light"));
  themeButton.addEventListener("click", function () {
    const t = root.getAttribute("data-theme") === "dark" ? "light" : "dark";
    setTheme(t);
    store("scratchlm-guide-theme", t);
  });

  // ---- the stage map follows the reader: the stage nearest the top of the window is "current"
  function currentStage() {
    let best = stages[0];
    for (const s of stages) {
      if (s.getBoundingClientRect().top <= 120) best = s;
    }
    return best;
  }
  function markCurrent() {
    const cur = currentStage();
    for (const a of mapLinks) a.classList.toggle("current", cur && a.dataset.target === cur.id);
  }
  window.addEventListener("scroll", markCurrent, { passive: true });
  markCurrent();

  function goTo(section) {
    if (!section) return;
    section.scrollIntoView({ behavior: "instant", block: "start" });  // repeated keys must not race a smooth scroll
    history.replaceState(null, "", "#" + section.id);
    markCurrent();
  }
  function step(delta) {
    const visible = stages.filter(function (s) { return !s.classList.contains("search-hidden"); });
    const cur = currentStage();
    let i = visible.indexOf(cur);
    if (i < 0) i = delta > 0 ? -1 : visible.length;
    goTo(visible[Math.min(visible.length - 1, Math.max(0, i + delta))]);
  }

  // ---- search: hide topics that do not contain every word of the query, and stages left empty
  const search = document.getElementById("search");
  const count = document.getElementById("search-count");
  const noResults = document.getElementById("no-results");
  const topics = Array.from(document.querySelectorAll("section.stage .topic"));
  const texts = new Map(topics.map(function (t) { return [t, t.textContent.toLowerCase()]; }));
  function applySearch() {
    const words = search.value.toLowerCase().split(/\s+/).filter(Boolean);
    let hits = 0;
    for (const t of topics) {
      const text = texts.get(t);
      const ok = words.every(function (w) { return text.includes(w); });
      t.classList.toggle("search-hidden", words.length > 0 && !ok);
      if (ok && words.length) hits++;
    }
    for (const s of stages) {
      const any = s.querySelector(".topic:not(.search-hidden)") !== null;
      s.classList.toggle("search-hidden", words.length > 0 && !any);
      const li = document.querySelector('nav.map a[data-target="' + s.id + '"]').parentElement;
      li.classList.toggle("hit", words.length > 0 && any);
      li.classList.toggle("miss", words.length > 0 && !any);
    }
    count.textContent = words.length ? hits + (hits === 1 ? " section" : " sections") : "";
    noResults.hidden = !(words.length && hits === 0);
    markCurrent();
  }
  search.addEventListener("input", applySearch);
  search.addEventListener("keydown", function (e) {
    if (e.key === "Escape") { search.value = ""; applySearch(); search.blur(); }
    if (e.key === "Enter") {
      const first = document.querySelector("section.stage .topic:not(.search-hidden)");
      if (first) first.scrollIntoView();
    }
  });

  document.addEventListener("keydown", function (e) {
    if (e.target === search || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "/") { e.preventDefault(); search.focus(); }
    else if (e.key === "n" || e.key === "ArrowRight") step(1);
    else if (e.key === "p" || e.key === "ArrowLeft") step(-1);
  });

  // ---- code snippets: fold or unfold them all; printing unfolds everything
  const snippets = Array.from(document.querySelectorAll("details.snippet"));
  const toggle = document.getElementById("toggle-code");
  toggle.addEventListener("click", function () {
    const open = !snippets.every(function (d) { return d.open; }) ;
    for (const d of snippets) d.open = open;
    toggle.textContent = open ? "collapse code" : "expand code";
  });
  window.addEventListener("beforeprint", function () { for (const d of snippets) d.open = true; });
  document.getElementById("print").addEventListener("click", function () { window.print(); });
})();
