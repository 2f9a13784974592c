"""The TinyWorld lexicon: a small, fixed world that every story, fact and task agrees with.

Everything here is a constant. The corpus seed changes which stories are told, never the world: Mia always lives
in the village, cows always eat grass, bananas are always yellow. That consistency is what lets a tiny model learn
facts from the stories and lets the question/answer tasks have one right answer.

Words are kept to a closed vocabulary (about a thousand words), inflections are listed or derived by rule
(`verb_forms`), and `CATEGORY` maps each content word to its category, which is how tests count sentence
shapes and how `check_answer` knows what a wrong answer looks like.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# --------------------------------------------------------------------------------------------------
# grammar helpers

VOWELS = "aeiou"


def a_an(phrase: str) -> str:
    """'apple' -> 'an apple', 'red apple' -> 'a red apple' (TinyWorld has no 'hour'/'unicorn' exceptions)."""
    return ("an " if phrase[0] in VOWELS else "a ") + phrase


IRREGULAR_PAST = {
    "run": "ran", "swim": "swam", "sing": "sang", "ride": "rode", "fly": "flew", "draw": "drew", "build": "built",
    "dig": "dug", "read": "read", "make": "made", "find": "found", "see": "saw", "go": "went", "eat": "ate",
    "give": "gave", "take": "took", "throw": "threw", "hold": "held", "catch": "caught", "sit": "sat",
    "bring": "brought", "hide": "hid", "say": "said", "tell": "told", "feel": "felt", "have": "had", "get": "got",
    "blow": "blew", "fall": "fell", "grow": "grew", "drink": "drank", "come": "came", "sleep": "slept",
    "write": "wrote", "swing": "swung", "spin": "spun", "win": "won", "think": "thought", "know": "knew",
    "keep": "kept", "lose": "lost", "put": "put", "cut": "cut", "shine": "shone", "begin": "began", "bake": "baked",
}
IRREGULAR_S = {"go": "goes", "have": "has", "do": "does", "fly": "flies", "catch": "catches", "wash": "washes"}


def verb_forms(base: str) -> tuple[str, str, str, str]:
    """(base, third-person -s, past, -ing) by the regular English rules plus a table of irregular pasts.

    The doubling rule (hop -> hopped, hopping) applies to one-syllable consonant-vowel-consonant verbs (open ->
    opened: two syllables, no doubling); that is exact for every verb TinyWorld uses (tests check a list by hand).
    """
    if base in IRREGULAR_S:
        s = IRREGULAR_S[base]
    elif base.endswith(("s", "sh", "ch", "x", "z", "o")):
        s = base + "es"
    elif base.endswith("y") and base[-2] not in VOWELS:
        s = base[:-1] + "ies"
    else:
        s = base + "s"
    one_syllable = sum(1 for i, ch in enumerate(base) if ch in VOWELS and (i == 0 or base[i - 1] not in VOWELS)) == 1
    cvc = one_syllable and base[-1] not in VOWELS + "wxy" and base[-2] in VOWELS and base[-3] not in VOWELS
    if base.endswith("ie"):
        ing = base[:-2] + "ying"
    elif base.endswith("e") and not base.endswith(("ee", "ye")):
        ing = base[:-1] + "ing"
    elif cvc:
        ing = base + base[-1] + "ing"
    else:
        ing = base + "ing"
    if base in IRREGULAR_PAST:
        past = IRREGULAR_PAST[base]
    elif base.endswith("e"):
        past = base + "d"
    elif base.endswith("y") and base[-2] not in VOWELS:
        past = base[:-1] + "ied"
    elif cvc:
        past = base + base[-1] + "ed"
    else:
        past = base + "ed"
    return base, s, past, ing


PRONOUNS = {  # gender -> (subject, object, possessive, reflexive)
    "f": ("she", "her", "her", "herself"),
    "m": ("he", "him", "his", "himself"),
}

# --------------------------------------------------------------------------------------------------
# the people


@dataclass(frozen=True, eq=False)  # eq=False: identity hashing, each person is one object (and 3x faster in sets)
class Character:
    name: str
    gender: str  # "f" or "m": chooses she/he and girl/boy
    age: int
    trait: str  # a fixed personality word used in stories and facts
    home: str  # key into HOMES
    colour: str  # favourite colour
    food: str  # favourite food (key into FOODS)
    pet: str  # key into ANIMALS, or "" for none

    @property
    def kind(self) -> str:
        return "girl" if self.gender == "f" else "boy"


# One row per child. Fixed by hand so the facts are stable and readable; every home, colour and pet appears
# several times so that "who lives on the farm?" has more than one answer and the model must read the story.
CHARACTERS: tuple[Character, ...] = (
    Character("Mia", "f", 6, "kind", "village", "blue", "apples", "cat"),
    Character("Lily", "f", 5, "curious", "farm", "yellow", "strawberries", "dog"),
    Character("Emma", "f", 7, "brave", "town", "green", "pancakes", "rabbit"),
    Character("Zoe", "f", 6, "cheerful", "river", "purple", "grapes", "fish"),
    Character("Nora", "f", 4, "shy", "forest", "pink", "cookies", "cat"),
    Character("Ruby", "f", 8, "clever", "sea", "red", "cherries", ""),
    Character("Lucy", "f", 5, "gentle", "hill", "orange", "carrots", "dog"),
    Character("Ella", "f", 7, "funny", "village", "white", "bananas", "bird"),
    Character("Anna", "f", 6, "busy", "farm", "brown", "bread", "hen"),
    Character("Rosa", "f", 5, "quiet", "town", "pink", "soup", "rabbit"),
    Character("Ivy", "f", 7, "brave", "forest", "green", "pears", "dog"),
    Character("Maya", "f", 8, "kind", "sea", "blue", "pancakes", "cat"),
    Character("Sara", "f", 4, "curious", "river", "yellow", "muffins", "duck"),
    Character("Hana", "f", 6, "clever", "hill", "purple", "blueberries", ""),
    Character("Tessa", "f", 5, "cheerful", "village", "orange", "oranges", "fish"),
    Character("Amy", "f", 7, "gentle", "town", "red", "cake", "bird"),
    Character("Kate", "f", 6, "funny", "farm", "green", "corn", "horse"),
    Character("Grace", "f", 8, "busy", "river", "white", "cheese", "dog"),
    Character("Leo", "m", 6, "brave", "town", "red", "pizza", "dog"),
    Character("Max", "m", 5, "funny", "farm", "blue", "carrots", "horse"),
    Character("Ben", "m", 7, "kind", "village", "green", "bread", "cat"),
    Character("Sam", "m", 4, "shy", "river", "orange", "bananas", "duck"),
    Character("Tom", "m", 8, "clever", "sea", "gray", "soup", "fish"),
    Character("Jack", "m", 6, "curious", "forest", "brown", "nuts", "dog"),
    Character("Finn", "m", 5, "cheerful", "sea", "blue", "cookies", ""),
    Character("Noah", "m", 7, "gentle", "hill", "yellow", "apples", "rabbit"),
    Character("Owen", "m", 6, "busy", "town", "black", "pizza", "cat"),
    Character("Luke", "m", 8, "quiet", "forest", "green", "berries", "bird"),
    Character("Omar", "m", 5, "kind", "river", "purple", "grapes", "dog"),
    Character("Theo", "m", 7, "brave", "hill", "orange", "pancakes", ""),
    Character("Eli", "m", 4, "curious", "village", "red", "cherries", "hen"),
    Character("Jake", "m", 6, "funny", "farm", "yellow", "corn", "pig"),
    Character("Ravi", "m", 7, "clever", "town", "white", "muffins", "fish"),
    Character("Hugo", "m", 5, "cheerful", "forest", "pink", "cake", "bird"),
    Character("Kai", "m", 8, "busy", "sea", "blue", "cheese", "cat"),
    Character("Dan", "m", 6, "gentle", "village", "brown", "soup", "dog"),
)
CHARACTER_BY_NAME = {c.name: c for c in CHARACTERS}


@dataclass(frozen=True, eq=False)
class Grownup:
    """Mom, Dad, Grandma, Grandpa: written like names ("Mia ran to Mom") so pronouns stay unambiguous."""

    name: str
    gender: str


GROWNUPS = (Grownup("Mom", "f"), Grownup("Dad", "m"), Grownup("Grandma", "f"), Grownup("Grandpa", "m"))

HOMES = {  # key -> how "lives ..." ends
    "village": "in a small village",
    "farm": "on a farm",
    "town": "in a busy town",
    "river": "in a house by the river",
    "forest": "in a little house near the forest",
    "sea": "in a house by the sea",
    "hill": "in a house on a hill",
}

TRAITS = ("kind", "curious", "brave", "cheerful", "shy", "clever", "gentle", "funny", "busy", "quiet")

# --------------------------------------------------------------------------------------------------
# places where stories happen


@dataclass(frozen=True)
class Place:
    name: str
    at: str  # "at the park"
    to: str  # "to the park"
    spots: tuple[str, ...]  # where a lost thing can be ("under a bench"); at least 4
    sights: tuple[str, ...]  # what you can see there ("a big slide"); at least 2
    outdoor: bool = True


PLACES: tuple[Place, ...] = (
    Place("park", "at the park", "to the park",
          ("under a bench", "behind a big tree", "near the swings", "in the sandbox", "under the slide"),
          ("a big slide", "tall trees", "a little pond", "green grass")),
    Place("garden", "in the garden", "to the garden",
          ("under a bush", "behind the flowers", "next to the shed", "in a flower pot", "under a big leaf"),
          ("pretty flowers", "a small shed", "a row of carrots", "a little tree")),
    Place("beach", "at the beach", "to the beach",
          ("under a rock", "in the sand", "behind a big shell", "near the water", "next to a sand castle"),
          ("soft sand", "blue water", "big waves", "little crabs")),
    Place("forest", "in the forest", "to the forest",
          ("under a log", "behind a big rock", "in a pile of leaves", "near a tall tree", "under a bush"),
          ("tall trees", "soft moss", "a little stream", "many birds")),
    Place("farm", "on the farm", "to the farm",
          ("in the hay", "behind the barn", "near the fence", "under the cart", "next to the well"),
          ("a red barn", "many cows", "a big tractor", "a field of corn")),
    Place("school", "at school", "to school",
          ("under a desk", "in the coat room", "behind the door", "on a shelf", "in a box of toys"),
          ("many books", "a big clock", "bright pictures", "small chairs"), outdoor=False),
    Place("backyard", "in the backyard", "to the backyard",
          ("under the swing", "behind the fence", "near the gate", "in the grass", "under a bush"),
          ("a tall tree", "a little swing", "green grass", "a bird house")),
    Place("river", "by the river", "to the river",
          ("under a rock", "in the tall grass", "near the bridge", "behind a log", "next to the water"),
          ("clear water", "a little bridge", "smooth stones", "many ducks")),
    Place("hill", "on the hill", "to the hill",
          ("behind a big rock", "in the tall grass", "under a bush", "near an old tree", "next to a stone"),
          ("a big sky", "soft grass", "an old tree", "many flowers")),
    Place("meadow", "in the meadow", "to the meadow",
          ("in the tall grass", "under a bush", "behind a big rock", "near the flowers", "next to a stone"),
          ("many flowers", "busy bees", "tall grass", "pretty butterflies")),
    Place("pond", "by the pond", "to the pond",
          ("under a rock", "in the reeds", "behind a log", "near the water", "under a bush"),
          ("green frogs", "little ducks", "clear water", "tall reeds")),
    Place("market", "at the market", "to the market",
          ("under a table", "behind a box", "near the fruit", "in a basket", "next to a cart"),
          ("many people", "red apples", "fresh bread", "bright flowers")),
    Place("library", "at the library", "to the library",
          ("under a table", "behind a shelf", "in a big chair", "near the window", "on a shelf"),
          ("many books", "big windows", "soft chairs", "quiet rooms"), outdoor=False),
    Place("playground", "at the playground", "to the playground",
          ("under the slide", "near the swings", "in the sandbox", "behind a bench", "under a tree"),
          ("a tall slide", "red swings", "a big sandbox", "many children")),
    Place("zoo", "at the zoo", "to the zoo",
          ("under a bench", "near the gate", "behind a sign", "next to a tree", "in the grass"),
          ("big lions", "tall giraffes", "funny monkeys", "a gray elephant")),
    Place("kitchen", "in the kitchen", "to the kitchen",
          ("under the table", "behind a chair", "in a cupboard", "next to the sink", "on a shelf"),
          ("a warm oven", "a big table", "shiny pots", "a bowl of fruit"), outdoor=False),
    Place("bedroom", "in the bedroom", "to the bedroom",
          ("under the bed", "behind the door", "in a drawer", "on a shelf", "in a box of toys"),
          ("a soft bed", "a little lamp", "many toys", "a big window"), outdoor=False),
)
PLACE_BY_NAME = {p.name: p for p in PLACES}

# --------------------------------------------------------------------------------------------------
# things, animals, foods


@dataclass(frozen=True)
class Thing:
    noun: str
    plural: str
    tags: frozenset[str]  # toy, small, wear, fly, roll, float, break, beach, ...


def _thing(noun: str, tags: str, plural: str = "") -> Thing:
    return Thing(noun, plural or noun + "s", frozenset(tags.split()))


THINGS: tuple[Thing, ...] = (
    _thing("ball", "toy small roll fly lost"),
    _thing("kite", "toy fly"),
    _thing("balloon", "toy fly"),
    _thing("hat", "wear fly lost"),
    _thing("scarf", "wear fly lost", "scarves"),
    _thing("doll", "toy small lost break share"),
    _thing("boat", "toy float lost share"),
    _thing("drum", "toy share"),
    _thing("book", "small lost share"),
    _thing("shell", "small lost beach"),
    _thing("ribbon", "wear small fly lost"),
    _thing("marble", "toy small roll lost"),
    _thing("truck", "toy roll lost break share"),
    _thing("robot", "toy lost break share"),
    _thing("train", "toy lost break share"),
    _thing("cup", "break"),
    _thing("bowl", "break"),
    _thing("bucket", "toy beach share"),
    _thing("shoe", "wear lost"),
    _thing("key", "small lost"),
    _thing("crayon", "small lost share"),
    _thing("whistle", "small lost share"),
    _thing("bell", "small lost"),
    _thing("mitten", "wear lost"),
    _thing("frisbee", "toy fly"),
    _thing("puzzle", "toy share"),
    _thing("blanket", "soft"),
    _thing("umbrella", "wear"),
    _thing("plane", "toy fly break share"),
    _thing("car", "toy roll lost break share"),
    _thing("horn", "toy small share"),
    _thing("lamp", "break"),
    _thing("clock", "break"),
    _thing("vase", "break"),
    _thing("spoon", "small"),
)
THING_BY_NOUN = {t.noun: t for t in THINGS}


@dataclass(frozen=True)
class Animal:
    noun: str
    plural: str
    baby: str  # what a young one is called
    sound: str  # "moo"; "" if it makes no sound we name
    eats: str  # a DIET word, plural or mass: "grass", "seeds"
    lives: str  # "on farms", "in the sea"
    legs: int  # -1 where a simple answer would mislead (monkeys: arms or legs?)
    covering: str  # "fur", "feathers", "scales", "a shell", ""
    can: str  # the one thing it is best known for doing: "fly", "swim", "hop", ...


ANIMALS: tuple[Animal, ...] = (
    Animal("cat", "cats", "kitten", "meow", "fish", "in houses", 4, "fur", "climb"),
    Animal("dog", "dogs", "puppy", "woof", "bones", "in houses", 4, "fur", "run"),
    Animal("cow", "cows", "calf", "moo", "grass", "on farms", 4, "", "walk"),
    Animal("duck", "ducks", "duckling", "quack", "seeds", "on ponds", 2, "feathers", "swim"),
    Animal("horse", "horses", "foal", "neigh", "hay", "on farms", 4, "", "run"),
    Animal("sheep", "sheep", "lamb", "baa", "grass", "on farms", 4, "wool", "walk"),
    Animal("pig", "pigs", "piglet", "oink", "corn", "on farms", 4, "", "dig"),
    Animal("hen", "hens", "chick", "cluck", "seeds", "on farms", 2, "feathers", "walk"),
    Animal("frog", "frogs", "tadpole", "ribbit", "bugs", "in ponds", 4, "", "hop"),
    Animal("bird", "birds", "chick", "tweet", "worms", "in trees", 2, "feathers", "fly"),
    Animal("owl", "owls", "owlet", "hoot", "mice", "in trees", 2, "feathers", "fly"),
    Animal("fish", "fish", "fry", "", "bugs", "in water", 0, "scales", "swim"),
    Animal("rabbit", "rabbits", "bunny", "", "carrots", "in holes", 4, "fur", "hop"),
    Animal("mouse", "mice", "pup", "squeak", "seeds", "in holes", 4, "fur", "run"),
    Animal("bear", "bears", "cub", "growl", "honey", "in the forest", 4, "fur", "climb"),
    Animal("fox", "foxes", "kit", "yip", "mice", "in the forest", 4, "fur", "run"),
    Animal("squirrel", "squirrels", "kit", "", "nuts", "in trees", 4, "fur", "climb"),
    Animal("bee", "bees", "larva", "buzz", "nectar", "in hives", 6, "", "fly"),
    Animal("lion", "lions", "cub", "roar", "meat", "at the zoo", 4, "fur", "run"),
    Animal("monkey", "monkeys", "baby", "", "bananas", "in trees", -1, "fur", "climb"),  # -1: no legs fact
    Animal("turtle", "turtles", "hatchling", "", "leaves", "in ponds", 4, "a shell", "swim"),
    Animal("goat", "goats", "kid", "maa", "grass", "on farms", 4, "", "climb"),
    Animal("spider", "spiders", "spiderling", "", "bugs", "in webs", 8, "", "spin webs"),
    Animal("elephant", "elephants", "calf", "", "grass", "at the zoo", 4, "", "walk"),
)
ANIMAL_BY_NOUN = {a.noun: a for a in ANIMALS}

# The young animals a child can find and help home in a story, with the adult whose facts they share.
YOUNG = {"puppy": "dog", "kitten": "cat", "duckling": "duck", "lamb": "sheep", "chick": "hen", "bunny": "rabbit"}


@dataclass(frozen=True)
class Food:
    noun: str  # as used in "I like ...": plural for count nouns, bare for mass nouns
    plural: bool  # "apples are" vs "bread is"
    colour: str
    taste: str  # sweet, sour, salty, good, ...
    kind: str  # fruit, vegetable, treat, meal
    grows: str  # "on trees", "in the ground", ... or "" for cooked food


FOODS: tuple[Food, ...] = (
    Food("apples", True, "red", "sweet", "fruit", "on trees"),
    Food("bananas", True, "yellow", "sweet", "fruit", "on trees"),
    Food("oranges", True, "orange", "sweet", "fruit", "on trees"),
    Food("grapes", True, "purple", "sweet", "fruit", "on vines"),
    Food("strawberries", True, "red", "sweet", "fruit", "on small plants"),
    Food("cherries", True, "red", "sweet", "fruit", "on trees"),
    Food("pears", True, "green", "sweet", "fruit", "on trees"),
    Food("blueberries", True, "blue", "sweet", "fruit", "on bushes"),
    Food("berries", True, "red", "sweet", "fruit", "on bushes"),
    Food("lemons", True, "yellow", "sour", "fruit", "on trees"),
    Food("carrots", True, "orange", "crunchy", "vegetable", "in the ground"),
    Food("peas", True, "green", "sweet", "vegetable", "in pods"),
    Food("potatoes", True, "brown", "good", "vegetable", "in the ground"),
    Food("corn", False, "yellow", "sweet", "vegetable", "on tall plants"),
    Food("nuts", True, "brown", "crunchy", "snack", "on trees"),
    Food("cookies", True, "brown", "sweet", "treat", ""),
    Food("cake", False, "white", "sweet", "treat", ""),
    Food("muffins", True, "brown", "sweet", "treat", ""),
    Food("pancakes", True, "yellow", "sweet", "meal", ""),
    Food("bread", False, "brown", "good", "meal", ""),
    Food("cheese", False, "yellow", "salty", "meal", ""),
    Food("soup", False, "orange", "good", "meal", ""),
    Food("pizza", False, "red", "yummy", "meal", ""),
)
FOOD_BY_NOUN = {f.noun: f for f in FOODS}
FOOD_SINGULAR = {"apples": "apple", "bananas": "banana", "oranges": "orange", "grapes": "grape",
                 "strawberries": "strawberry", "cherries": "cherry", "pears": "pear", "blueberries": "blueberry",
                 "berries": "berry", "lemons": "lemon", "carrots": "carrot", "peas": "pea", "potatoes": "potato",
                 "nuts": "nut", "cookies": "cookie", "muffins": "muffin", "pancakes": "pancake"}
# Things animals eat that are not people food (the DIET category); "fish" and "mice" are animals already.
DIET = ("grass", "hay", "seeds", "bugs", "worms", "bones", "honey", "nectar", "meat", "leaves")

COLOURS = ("red", "blue", "green", "yellow", "orange", "purple", "pink", "brown", "white", "black", "gray")
SIZES = ("big", "little", "small", "shiny", "new", "soft", "old")

# Feelings. GOOD/BAD are what a story's resolution/problem may say; a few are both states and adjectives.
GOOD_FEELINGS = ("happy", "glad", "proud", "excited", "cheerful", "calm")
BAD_FEELINGS = ("sad", "worried", "upset", "scared", "lonely", "grumpy")
FEELINGS = GOOD_FEELINGS + BAD_FEELINGS + ("surprised", "tired", "sorry", "hungry", "shy", "angry")

# Nature facts: (subject, sentence variants). The first variants are the train phrasings; the held-out split
# is decided per (fact, variant) in heldout.py, so every fact is seen in train in some wording.
NATURE_FACTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("sky", ("The sky is blue.", "On a clear day, the sky is blue.", "When there are no clouds, the sky looks blue.")),
    ("grass", ("Grass is green.", "The grass is green in spring.", "Most grass is green.")),
    ("snow", ("Snow is white and cold.", "Snow is cold, and it is white.", "When it snows, everything turns white.")),
    ("sun", ("The sun is hot and bright.", "The sun gives us light and keeps us warm.", "The sun is very bright.")),
    ("sunrise", ("The sun comes up in the morning.", "Every morning, the sun rises.",
                 "In the morning, the sun comes up.")),
    ("moon", ("The moon comes out at night.", "At night, you can see the moon.", "We see the moon at night.")),
    ("ice", ("Ice is cold.", "Ice is frozen water.", "When water gets very cold, it turns into ice.")),
    ("melt", ("Ice melts in the sun.", "When ice gets warm, it melts.", "In the warm sun, ice turns back into water.")),
    ("fire", ("Fire is hot.", "Fire is very hot, so we do not touch it.",
              "You must not touch fire, because it is hot.")),
    ("rain", ("Rain comes from clouds.", "The rain falls from gray clouds.", "When clouds get heavy, it rains.")),
    ("plants", ("Plants need water and sun to grow.", "A plant needs sun and water.",
                "With water and sun, plants grow.")),
    ("seeds", ("Seeds grow into plants.", "A seed can grow into a plant.", "If you plant a seed, it can grow.")),
    ("rainbow", ("A rainbow has many colours.", "After the rain, you can sometimes see a rainbow.",
                 "A rainbow shows up when the sun shines in the rain.")),
    ("leaves", ("In the fall, leaves turn red and yellow.", "Leaves fall from the trees in the fall.",
                "Many leaves change colour in the fall.")),
    ("week", ("A week has seven days.", "There are seven days in a week.", "Seven days make one week.")),
    ("year", ("A year has four seasons.", "There are four seasons in a year.",
              "Spring, summer, fall and winter are the four seasons.")),
    ("winter", ("Winter is the coldest season.", "It is cold in winter.", "In winter, it can snow.")),
    ("summer", ("Summer is the warmest season.", "It is warm in summer.", "In summer, the days are long and warm.")),
    ("water", ("Fish need water to live.", "A fish lives in water.", "Fish cannot live out of water.")),
    ("wind", ("You cannot see the wind, but you can feel it.", "The wind can blow a kite up into the sky.",
              "A strong wind makes the trees move.")),
    ("stars", ("Stars shine in the night sky.", "At night, you can see the stars.",
               "The stars come out when it is dark.")),
    ("sleep", ("Children need sleep to grow.", "Sleep helps your body rest.", "After a long day, we sleep at night.")),
)

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve")


# --------------------------------------------------------------------------------------------------
# word -> category, for counting sentence shapes and for checking answers


@dataclass
class _Index:
    category: dict[str, str] = field(default_factory=dict)  # word -> category (first registration wins)
    lemma: dict[str, str] = field(default_factory=dict)  # word form -> lemma ("mice" -> "mouse")

    def add(self, cat: str, lemma: str, *forms: str) -> None:
        for w in (lemma, *forms):
            w = w.lower()
            self.category.setdefault(w, cat)
            self.lemma.setdefault(w, lemma.lower())


def _build_index() -> _Index:
    ix = _Index()
    for c in CHARACTERS:
        ix.add("NAME", c.name, c.name + "'s")
    for g in GROWNUPS:
        ix.add("NAME", g.name, g.name + "'s")
    for a in ANIMALS:  # before foods: "fish" is an animal first
        ix.add("ANIMAL", a.noun, a.plural)
    for young, adult in YOUNG.items():
        ix.add("ANIMAL", young, young + "s" if young != "puppy" else "puppies")
    for c in COLOURS:  # before foods: "orange" is a colour first
        ix.add("COLOUR", c)
    for f in FOODS:
        ix.add("FOOD", f.noun, FOOD_SINGULAR.get(f.noun, f.noun))
    for d in DIET:
        ix.add("FOOD", d)
    for p in PLACES:
        ix.add("PLACE", p.name, p.name + "s")
    for h in HOMES:
        ix.add("PLACE", h, h + "s")
    for t in THINGS:
        ix.add("THING", t.noun, t.plural)
    for f in FEELINGS:
        ix.add("FEELING", f)
    for t in TRAITS:
        ix.add("TRAIT", t)
    for s in SIZES:
        ix.add("SIZE", s)
    for k in ("fruit", "vegetable"):
        ix.add("KIND", k, k + "s")
    for i, w in enumerate(NUMBER_WORDS):
        ix.add("NUMBER", str(i), w)
    return ix


INDEX = _build_index()
CATEGORY = INDEX.category
LEMMA = INDEX.lemma
