"""The plots TinyWorld tells, each written as parts (setting, want, problem, attempt, help, resolution, feeling,
moral) whose options are templates (see templates.py for the notation).

To add a plot: write its parts and a function that tells them in order with `t.tell(PART)` (or `t.maybe(p, PART)`
for optional ones) and records a few questions its text always answers with `t.ask(...)`; then add a row to PLOTS
with the places it fits and the tag of the things it uses. make_story (stories.py) fills the cast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from scratchlm.data.tinyworld.lexicon import COLOURS, GOOD_FEELINGS, NUMBER_WORDS, a_an
from scratchlm.data.tinyworld.templates import Part, Teller

TIMES = ("One day", "One sunny morning", "One bright afternoon", "Early one morning", "One warm day",
         "One Saturday", "Last summer", "One cool morning", "After lunch one day")
WINDY = ("One windy day", "One windy afternoon", "On a breezy morning", "One day, when the wind was strong")
EVENINGS = ("One evening", "One night", "Late one evening", "When it was almost bedtime")
LISTS = {
    "T": TIMES, "good": GOOD_FEELINGS[:5], "bad": ("sad", "upset", "worried"), "col": COLOURS,
    "num": NUMBER_WORDS[2:6], "then": ("Then", "After a while", "Soon", "A little later"),
    "acol": tuple(a_an(c) for c in COLOURS),  # "a red", "an orange"
}


# --------------------------------------------------------------------------------------------------
# parts every plot can use

SETTING = Part(
    ("Once upon a time, there was a {A.trait} [little |]{A.kind} named {A.name}.", "{A} lived {A.home}."),
    "{A.name} was a {A.trait} [little |]{A.kind} who lived {A.home}.",
    ("There once was a {A.kind} named {A.name}.", "{A} was {A.age} years old[ and very {A.trait}|]."),
    "Once upon a time, a {A.trait} {A.kind} named {A.name} lived {A.home}.",
    ("{A.name} was {A.age} years old.", "{A} lived {A.home} with {A.pos} family."),
)
PET = Part(
    "{A} had a [little |]{A.pet} that {A} loved very much.",
    "{A} [also |]had a pet {A.pet}.",
    "{A.pos} best friend at home was a {A.pet}.",
)
FAV_COLOUR = Part("{O.col} was {A.pos} favourite colour.",
                  "{A} loved {O.col}, because it was {A.pos} favourite colour.")
FAV_FOOD = Part("{F} {F.was} {A.pos} favourite food.", "{A} loved {F} more than anything.")
FEEL_BAD = Part(
    "{A} felt [very |so |]{bad}.", "{A} was [very |so ]{bad}.", "{A} [sat down and |]began to cry.",
    "{A} did not know what to do.",
)
FEEL_GOOD = Part(
    "{A} felt {E.good}[ again|].", "{A} was [so |very ]{E.good}.", ("{A} smiled a big smile.", "{A} felt {E.good}."),
    "Now {A} was very {E.good}.",
)
BEDTIME = Part(
    "That night, {A} went to bed with a smile.", "It was a [good|happy|wonderful] day.",
    "At the end of the day, {A} went home [tired but happy|with a big smile].",
    "[And|So] it was a good day after all.",
)
THANKS = Part(
    "\"Thank you, {X.name}! [You are a good friend|You are the best]!\" said {A.name}.",
    "{A} [hugged|thanked] {X.name}.",
    "{A} gave {X.name} a big hug. \"Thank you!\" {A} said.",
)


def _setting(t: Teller, c: dict) -> None:
    t.tell(SETTING)
    if c["A"].pet:
        t.maybe(0.3, PET)


# --------------------------------------------------------------------------------------------------
# the plots. Each function tells one story with the Teller and records questions its text answers.

GO = Part(
    "{T}, {A} [went|walked|ran] {L.to} with {B.name}.",
    "{T}, {A.name} and {B.name} [went|walked] {L.to} to play.",
    "{T}, {P.name} took {A.name} and {B.name} {L.to}.",
    ("{T}, {A} [walked|ran] {L.to}.", "{A.pos} friend {B.name} was there too."),
)
LOST_HAVE = Part("{A} had {O.a}[ with {A.obj}| in {A.pos} hand|].", "{A} brought {O.a} with {A.obj}.",
                 "{A} loved {A.pos} {O.col} {O} very much.")
LOST_PLAY = Part(
    "{A.name} and {B.name} played with the {O} for a long time.",
    "They [laughed and |]played [all morning|until lunch|for a long time|together].",
    "{A.name} showed the {O} to {B.name}, and they played together.",
)
LOST_PROBLEM = Part(
    "{then}, {A} could not find {A.pos} {O}[ anywhere|].", "When it was time to go home, the {O} was gone.",
    "{then}, {A} looked down, and {A.pos} {O} was not there.",
    "{A} put the {O} down to play tag, and then it was gone.",
)
LOST_CRY = Part("\"Oh no! Where is my {O}?\" {A} cried.", "\"I lost my {O}!\" said {A.name}.",
                "{A} felt [sad|worried|upset] and looked all around.")
LOST_TRY = Part(
    ("{A} looked {L.spot1}, but [it was not there|there was no {O}|{A} did not see it].",
     "Then {A} looked {L.spot2}, but it was not there either."),
    ("First, {A} looked {L.spot1}.", "Then {A} looked {L.spot2}.", "The {O} was not in either place."),
    "{A} [looked|searched] {L.spot1} and {L.spot2}, but [{A} could not find it|the {O} was not there]."
)
LOST_HELP = Part(
    ("\"Don't worry, {A.name}. I will help you,\" said {B.name}.",),
    ("{B} wanted to help.", "\"Let's look together,\" {B} said."),
    ("{A} asked {B.name} for help.", "\"Of course!\" said {B.name}."),
)
LOST_FOUND = Part(
    ("{B.name} looked {L.spot3}, and there it was!", "\"I found it!\" {B} [shouted|called|said]."),
    ("{B.name} saw something {O.col} {L.spot3}.", "It was {A.pos} {O}!"),
    ("Then {B.name} looked {L.spot3}.", "\"Look, {A.name}! There is your {O}!\" {B} said."),
)
LOST_MORAL = Part(
    "[From that day on|After that], {A} always kept {A.pos} {O} [close|safe].",
    "{A} learned that it is good to have a friend who helps.",
    "\"Friends help each other,\" said {B.name} with a smile.",
    "After that, {A.name} and {B.name} played until it was time to go home.",
)


def lost(t: Teller, c: dict) -> None:
    _setting(t, c)
    t.tell(GO)
    t.tell(LOST_HAVE)
    if c["O_fav"]:
        t.tell(FAV_COLOUR)
    t.maybe(0.6, LOST_PLAY)
    t.tell(LOST_PROBLEM)
    t.tell(LOST_CRY)
    t.tell(LOST_TRY)
    t.tell(LOST_HELP)
    t.tell(LOST_FOUND)
    t.people["X"] = c["B"]
    t.tell(THANKS)
    t.maybe(0.5, FEEL_GOOD)
    t.tell(LOST_MORAL)
    t.ask("What did {A} lose?", "{O}", "{A} lost {A.pos} {O}.")
    t.ask("Who helped {A} find the {O}?", "{B}", "{B} helped {A} find the {O}.")
    t.ask("Where did {B} find the {O}?", "{L.spot3}", "{B} found the {O} {L.spot3}.")


STUCK_HAVE = Part(
    "{A} had {O.a}.", "{A} brought {A.pos} {O.col} {O} to play with.", "{P.name} had given {A.name} {O.a}.",
)
STUCK_PLAY = Part(
    "{A} {O.play}.", "{A} {O.play}, and {B.name} [clapped|laughed|cheered].",
    "{A.name} and {B.name} took turns. {A} {O.play}.",
)
STUCK_PROBLEM = Part(
    "Then a strong wind came, and the {O} [flew|went] up into a tall tree.",
    "[Suddenly|All of a sudden], the {O} got stuck high in a [tall|big|very tall] tree.",
    "{then}, the {O} landed on a high branch of a tree.",
)
STUCK_CRY = Part("\"Oh no! My {O} is stuck!\" {A} cried.", "\"My {O}!\" said {A.name}. \"It is up in the tree!\"",
                 "{A} looked up at the tree and felt {bad}.")
STUCK_TRY = Part(
    "{A} jumped as high as {A} could, but [{A} could not reach it|the {O} was too high].",
    "{A} tried to shake the tree, but the {O} did not [come down|move|fall].",
    ("{A} found a long stick.", "{A} tried to reach the {O} with it, but the stick was too short."),
    "{A} wanted to climb the tree, but it was too tall.",
)
STUCK_HELP_P = Part(
    ("Then {P.name} came [outside|over|to see what was wrong].", "\"Let me help,\" said {P.name}."),
    ("{B.name} had an idea.", "\"Let's ask {P.name}!\" {B} said.", "{P.name} came to help."),
)
STUCK_FIX_P = Part(
    "{P} got a [tall |big |]ladder and climbed up to get the {O}.",
    "{P} was tall, so {P} reached up and got the {O}.",
    "{P} took a long pole and gently pushed the {O} down.",
)
STUCK_FIX_BIRD = Part(
    ("Just then, a [little |friendly |]bird landed on the branch.", "The bird pecked at the {O}, and it fell down."),
    ("Then the wind blew again.", "The {O} [fell|floated] down, right into {A.pos} hands!"),
)
STUCK_MORAL = Part(
    "After that, {A} played with the {O} far away from the trees.",
    "{A} learned to play in an open field, away from tall trees.",
    "\"Next time, I will be more careful,\" said {A.name}.",
    "{A.name} and {B.name} played with the {O} until the sun went down.",
)


def stuck(t: Teller, c: dict) -> None:
    t.lists = dict(LISTS, T=WINDY)
    _setting(t, c)
    t.tell(GO)
    t.tell(STUCK_HAVE)
    if c["O_fav"]:
        t.maybe(0.5, FAV_COLOUR)
    t.tell(STUCK_PLAY)
    t.tell(STUCK_PROBLEM)
    t.tell(STUCK_CRY)
    t.tell(STUCK_TRY)
    t.maybe(0.4, FEEL_BAD)
    if t.r() < 0.7:
        t.tell(STUCK_HELP_P)
        t.tell(STUCK_FIX_P)
        t.people["X"] = c["P"]
        t.tell(THANKS)
        t.ask("Who helped {A} get the {O} down?", "{P}", "{P} helped {A} get the {O} down.")
    else:
        t.tell(STUCK_FIX_BIRD)
    t.tell(FEEL_GOOD)
    t.tell(STUCK_MORAL)
    t.ask("Where did the {O} get stuck?", "tree", "The {O} got stuck in a tree.")
    t.ask("What colour was the {O}?", "{O.col}", "The {O} was {O.col}.")


BROKEN_HAVE = Part(
    "{A} [loved|really liked] {A.pos} {O.col} {O}.", "{A} had {O.a} that {P.name} [gave {A.obj}|made for {A.obj}].",
    "{A.pos} favourite thing was {O.a}.",
)
BROKEN_WHERE = Part("{T}, {A} was {L.at} with {B.name}.", "{T}, {A.name} and {B.name} were playing {L.at}.")
BROKEN_PROBLEM = Part(
    "{A} [dropped|bumped|knocked over] the {O}, and it broke.",
    "The {O} fell [on the floor|to the ground] and broke into [two|many|three] pieces.",
    "{B.name} wanted to hold the {O}, but it slipped and broke.",
    "{A} was running with the {O}, and it fell and broke.",
)
BROKEN_CRY = Part("\"Oh no! My {O} is broken!\" {A} said.", "{A} looked at the pieces and began to cry.",
                  "{A} was afraid that {P.name} would be [angry|upset].")
BROKEN_TRY = Part(
    "{A} tried to fix it, but the pieces would not stay together.",
    "{A} tried to put the pieces back, but {A} could not.",
    ("{A} wanted to hide the pieces.", "But then {A} thought about it."),
)
BROKEN_TELL = Part(
    ("{A} went to {P.name}.", "\"I am sorry. I broke the {O},\" {A} said."),
    "{A} told {P.name} what happened.",
    ("{A} ran to find {P.name}.", "\"The {O} broke,\" {A} said [softly|in a small voice]."),
)
BROKEN_HELP = Part(
    ("{P.name} [smiled|gave {A.name} a hug].", "\"It is okay, {A.name}. We can fix it[ together|],\" {P} said."),
    ("\"Thank you for telling me,\" said {P.name}.", "\"Accidents happen. Let's fix it.\""),
)
BROKEN_FIX = Part(
    "{P.name} got some [glue|tape], and they fixed the {O} together.",
    "{P.name} used some [glue|tape] to fix the {O}.",
    ("{P.name} and {A.name} sat at the table.", "They put the pieces together with glue, one by one."),
)
BROKEN_AFTER = Part(
    "[Soon|Now], the {O} was as good as new.", "The {O} was not perfect, but it [worked again|looked fine].",
    "Soon the {O} was fixed.",
)
BROKEN_MORAL = Part(
    "{A} learned that it is always best to tell the truth.",
    "From then on, {A} was very careful with {A.pos} {O}.",
    "\"Telling the truth was the right thing to do,\" said {P.name}.",
)


def broken(t: Teller, c: dict) -> None:
    _setting(t, c)
    t.tell(BROKEN_HAVE)
    t.tell(BROKEN_WHERE)
    t.tell(BROKEN_PROBLEM)
    t.tell(BROKEN_CRY)
    t.maybe(0.6, BROKEN_TRY)
    t.tell(BROKEN_TELL)
    t.tell(BROKEN_HELP)
    t.tell(BROKEN_FIX)
    t.tell(BROKEN_AFTER)
    t.tell(FEEL_GOOD)
    t.tell(BROKEN_MORAL)
    t.ask("What broke in the story?", "{O}", "The {O} broke.")
    t.ask("Who helped {A} fix the {O}?", "{P}", "{P} helped {A} fix the {O}.")


SHARE_HAVE = Part(
    "{P.name} [packed|gave {A.obj}] {F.some} for [a snack|lunch].",
    "{A} brought a [little |big |]basket with {F.some}.",
    "{A} had {F.some} for [a snack|lunch] [in {A.pos} bag|].",
)
SHARE_WHERE = Part("{T}, {A} went {L.to}.", "{T}, {A} was {L.at} with {P.name}.", "{T}, {A} [walked|ran] {L.to}.")
SHARE_PROBLEM = Part(
    ("{A} saw {B.name} sitting [alone|on a bench|under a tree].", "{B} looked [sad|hungry|very hungry]."),
    ("There {A} met {B.name}.", "{B} had forgotten {B.pos} snack at home."),
    ("{B.name} was there too.", "{B.pos} tummy was making a loud sound."),
)
SHARE_THINK = Part(
    "{A} wanted to eat all the {F}, but then {A} thought about {B.name}.",
    "{A} looked at the {F}, and then at {B.name}.",
    "{A} knew what it feels like to be hungry.",
)
SHARE_OFFER = Part(
    ("{A} walked over to {B.name}.", "\"Do you want some {F}?\" {A} asked."),
    ("\"{B.name}, would you like to share my {F}?\" asked {A.name}.",),
    ("{A} sat down next to {B.name}.", "\"Let's share,\" {A} said."),
)
SHARE_YES = Part("\"Yes, please!\" said {B.name}.", "{B.name} smiled. \"Thank you, {A.name}!\"",
                 "\"Thank you! You are very kind,\" said {B.name}.")
SHARE_EAT = Part(
    "{A.name} and {B.name} ate the {F} together.",
    "They sat [on the grass|on a bench|in the shade] and shared the {F}.",
    "{A} gave half of the {F} to {B.name}.",
)
SHARE_TASTE = Part("The {F} {F.was} very {F.taste}.", "The {F} tasted even better when they shared.")
SHARE_MORAL = Part(
    "{A} learned that sharing makes everyone [happy|glad].", "\"Sharing is [fun|nice]!\" said {A.name}.",
    "From that day on, {A.name} and {B.name} were best friends.", "Food tastes better when you share it.",
)


def share(t: Teller, c: dict) -> None:
    _setting(t, c)
    t.tell(SHARE_WHERE)
    t.tell(SHARE_HAVE)
    if c["F_fav"]:
        t.maybe(0.7, FAV_FOOD)
    t.tell(SHARE_PROBLEM)
    t.tell(SHARE_THINK)
    t.tell(SHARE_OFFER)
    t.tell(SHARE_YES)
    t.tell(SHARE_EAT)
    t.maybe(0.6, SHARE_TASTE)
    t.maybe(0.5, FEEL_GOOD)
    t.tell(SHARE_MORAL)
    t.ask("What did {A} share?", "{F}", "{A} shared the {F}.")
    t.ask("Who did {A} share with?", "{B}", "{A} shared with {B}.")


FEAR_START = Part(
    "{T}, {A} and {P.name} were [walking|sitting] {L.at}.", "{T}, {A} was {L.at} with {P.name}.",
    ("{T}, {P.name} and {A.name} went {L.to}.", "It was getting dark."),
)
FEAR_NOISE = Part(
    ("Suddenly, {A} heard a [strange|loud|funny] sound.", "\"{R.Sound}! {R.Sound}!\""),
    "Then {A} heard a sound: \"{R.Sound}! {R.Sound}!\"",
    ("[Something|Someone] was making a noise {L.spot1}.", "\"{R.Sound}!\" it went."),
)
FEAR_SCARED = Part(
    "{A} was [very |so |a little ]scared.", "{A} held {P.name}'s hand [tight|and did not move].",
    "\"What is that?\" {A} whispered.",
    ("{A} wanted to run away.", "\"I am scared,\" said {A.name}."),
)
FEAR_HELP = Part(
    ("\"Let's go and see,\" said {P.name}.", "{P} took {A.pos} hand."),
    ("{P.name} smiled.", "\"Don't be scared. Let's look together,\" {P} said."),
    ("\"Be brave, {A.name},\" said {P.name}.", "\"We can look together.\""),
)
FEAR_LOOK = Part(
    ("They looked {L.spot1}.", "There was {R.a}!"),
    "They walked slowly and found {R.a} {L.spot1}.",
    ("{A} peeked {L.spot1}.", "It was only {R.a}!"),
)
FEAR_RELIEF = Part(
    "{A} [laughed|giggled].", "{A} was not scared [anymore|at all now].", ("\"It is just {R.a}!\" said {A.name}.",
    "{A} laughed."),
    "The {R} looked at {A.name} and said \"{R.Sound}\" again.",
)
FEAR_MORAL = Part(
    "{A} learned that things are not so scary when you look closely.", "\"I was brave!\" said {A.name}.",
    "From then on, {A} liked to listen for the {R}.",
    "{P.name} was proud of {A.name} for being brave.",
)


def fear(t: Teller, c: dict) -> None:
    t.lists = dict(LISTS, T=EVENINGS)
    _setting(t, c)
    t.tell(FEAR_START)
    t.tell(FEAR_NOISE)
    t.tell(FEAR_SCARED)
    t.tell(FEAR_HELP)
    t.tell(FEAR_LOOK)
    t.tell(FEAR_RELIEF)
    t.maybe(0.5, FEEL_GOOD)
    t.tell(FEAR_MORAL)
    t.ask("What made the sound?", "{R}", "The sound came from {R.a}.")
    t.ask("What sound did {A} hear?", "{R.sound}", "{A} heard \"{R.sound}\".")


LEARN_WANT = Part(
    "{A} [really |]wanted to learn to {K}.", "{A} wished {A} could {K} [like {B.name}|too].",
    ("{A.pos} friend {B.name} could {K}.", "{A} wanted to {K} too."),
)
LEARN_WHERE = Part("{T}, {A} went {L.to} with {B.name}.", "{T}, {A.name} and {B.name} were {L.at}.")
LEARN_FAIL = Part(
    "{A} tried to {K}, but it was [very |too |]hard.", "The first time {A} tried, {A} could not do it.",
    ("{A} tried once.", "Then {A} tried again, but it did not work."),
)
LEARN_SAD = Part("\"I can't do it!\" {A} said.", "\"I will never learn to {K},\" {A} said.",
                 "{A} felt {bad} and wanted to give up.")
LEARN_HELP = Part(
    ("{B} came over.", "\"Don't give up, {A.name}! Try again[ slowly| one more time|],\" {B} said."),
    ("{B.name} showed {A.name} how to {K}.", "\"Go slowly,\" {B} said."),
    ("\"Everyone falls at first,\" said {B.name}.", "\"Keep trying!\""),
)
LEARN_PRACTICE = Part(
    "{A} tried again and again.", "{A} practiced every day for a [week|long time].",
    "{A} practiced all [afternoon|morning|day].",
)
LEARN_WIN = Part(
    "At last, {A} could {K}!", "Finally, {A} {K.past} all by {A.refl}!",
    "Then, one day, {A} {K.past}[ well| with no help]!",
)
LEARN_CHEER = Part("\"I did it!\" {A} shouted.", "\"You did it!\" said {B.name}.", "{B.name} clapped and cheered.")
LEARN_MORAL = Part(
    "{A} learned that practice [helps|makes things easier].", "Now {A} {K.s} every [day|morning].",
    "{A.name} and {B.name} loved to {K} together.", "{A} learned never to give up.",
)


def learn(t: Teller, c: dict) -> None:
    _setting(t, c)
    t.tell(LEARN_WANT)
    t.tell(LEARN_WHERE)
    t.tell(LEARN_FAIL)
    t.tell(LEARN_SAD)
    t.tell(LEARN_HELP)
    t.tell(LEARN_PRACTICE)
    t.tell(LEARN_WIN)
    t.tell(LEARN_CHEER)
    t.maybe(0.5, FEEL_GOOD)
    t.tell(LEARN_MORAL)
    t.ask("What did {A} want to learn?", "to {K}", "{A} wanted to learn to {K}.")
    t.ask("Who helped {A} learn?", "{B}", "{B} helped {A}.")


GIFT_WANT = Part(
    ("It was {P.name}'s birthday[ soon| the next day|].", "{A} wanted to give {P.name} a special gift."),
    ("{P.name}'s birthday was coming.", "{A} wanted to make something nice for {P.name}."),
)
GIFT_PROBLEM = Part(
    "But {A} did not know what to [give|make].", ("{A} had no money to buy a gift.", "What could {A} do?"),
    "{A} thought and thought, but {A} had no idea.",
)
GIFT_IDEA = Part(
    ("{B.name} had an idea.", "\"Why don't you {G}?\" {B} asked."),
    ("Then {A} had an idea.", "\"I will {G}!\" {A} said."),
    ("{A} asked {B.name} for help.", "\"You can {G},\" said {B.name}."),
)
GIFT_MAKE = Part(
    "[That afternoon|The next morning|Right away], {A} went {L.to} to {G}.",
    ("{A} went {L.to}.", "There, {A} [worked hard to|began to] {G}."),
)
GIFT_GIVE = Part(
    ("{A} gave the {G.noun} to {P.name}.", "\"Happy birthday, {P.name}!\" {A} said."),
    ("When {P.name} saw the {G.noun}, {P} smiled a big smile.",),
    ("\"Happy birthday!\" said {A.name}.", "{A} gave {P.name} the {G.noun}."),
)
GIFT_THANKS = Part("\"Thank you, {A.name}! I love it!\" said {P.name}.", "{P.name} gave {A.name} a big hug.",
                   "\"This is the best gift ever,\" said {P.name}.")
GIFT_MORAL = Part(
    "{A} learned that the best gifts come from the heart.", "It was the [best|happiest] birthday ever.",
    "{A} felt warm inside. Making a gift was even better than getting one.",
)


def gift(t: Teller, c: dict) -> None:
    _setting(t, c)
    t.tell(GIFT_WANT)
    t.tell(GIFT_PROBLEM)
    t.tell(GIFT_IDEA)
    t.tell(GIFT_MAKE)
    t.tell(GIFT_DETAIL[c["gift"]])
    t.tell(GIFT_GIVE)
    t.tell(GIFT_THANKS)
    t.maybe(0.5, FEEL_GOOD)
    t.tell(GIFT_MORAL)
    t.ask("Whose birthday was it?", "{P}", "It was {P}'s birthday.")
    t.ask("What did {A} give {P}?", "{G.noun}", "{A} gave {P} {G.a}.")


PUP_FIND = Part(
    "{T}, {A} was playing {L.at} when {A} heard a tiny sound.",
    ("{T}, {A} went {L.to}.", "There, {A} saw {N.a} {L.spot1}."),
    "{T}, {A} and {B.name} found {N.a} {L.spot1} {L.at}.",
)
PUP_SOUND = Part("\"{N.Sound}, {N.sound}!\" cried the {N}.", "The {N} was very small and all alone.",
                 "The little {N} said \"{N.Sound}\" in a small voice.")
PUP_LOST = Part("The {N} looked [lost and scared|lost|scared].", "The {N} could not find its mother.",
                "The {N} was cold and hungry.")
PUP_WANT = Part("{A} wanted to help the {N} find its mother.", "\"Let's find your mother,\" said {A.name}.",
                "{A} knew the {N} needed its mother.")
PUP_TRY = Part(
    "{A} picked up the {N} [gently|carefully] and looked around.",
    ("{A} looked {L.spot2}.", "But there was no {N.adult} there."),
    "{A} walked all around with the {N}, but {A} did not see its mother.",
)
PUP_HELP = Part(
    ("{B.name} came running.", "\"I saw a big {N.adult} {L.spot3}!\" {B} said."),
    ("Then {A} heard a loud \"{N.Asound}!\"", "It came from {L.spot3}."),
    ("{B.name} pointed {L.spot3}.", "There was a big {N.adult}."),
)
PUP_FIX = Part(
    "It was the {N}'s mother!", "The {N} ran to its mother as fast as it could.",
    "The mother {N.adult} was so glad to see its baby.",
)
PUP_MORAL = Part(
    "{A} was happy that {A} had helped.", "{A} learned that helping others feels good.",
    "\"Every baby needs its mother,\" said {A.name}.", "{A} waved goodbye to the {N}.",
)


def pup(t: Teller, c: dict) -> None:
    _setting(t, c)
    t.tell(PUP_FIND)
    t.tell(PUP_SOUND)
    t.tell(PUP_LOST)
    t.tell(PUP_WANT)
    t.tell(PUP_TRY)
    t.tell(PUP_HELP)
    t.tell(PUP_FIX)
    t.maybe(0.5, FEEL_GOOD)
    t.tell(PUP_MORAL)
    t.ask("What animal did {A} find?", "{N}", "{A} found {N.a}.")
    t.ask("What was the {N} looking for?", "mother", "The {N} was looking for its mother.")


RAIN_PLAN = Part(
    "{A.name} and {P.name} wanted to have a picnic {L.at}.", "{A} was going to play {L.at} with {P.name}.",
    ("{T}, {A} and {P.name} went {L.to}.", "They wanted to play outside all day."),
)
RAIN_PACK = Part("{A} packed {F.some}[ and {acol} blanket|].", "{P.name} brought {F.some} and a big blanket.")
RAIN_PROBLEM = Part(
    "But then dark clouds came, and it began to rain.",
    "Just as they got there, it started to rain[ hard| a lot|].",
    ("The sky turned gray.", "Soon, big drops of rain fell on the grass."),
)
RAIN_SAD = Part("\"Oh no! Now we can't play outside!\" said {A.name}.", "{A} felt {bad}.",
                "{A} looked at the rain [and sighed|out of the window].")
RAIN_FIX = Part(
    ("{P.name} had an idea.", "\"Let's have our picnic inside,\" said {P.name}.",
     "They sat on the floor at home and ate the {F}."),
    ("\"Let's put on our boots and jump in the puddles!\" said {P.name}.", "They splashed and laughed in the rain."),
    ("{P.name} had an idea.", "\"Let's wait under that tree,\" {P} said.", "They waited, and soon the rain stopped."),
)
RAIN_BOW = Part("When the rain stopped, they saw a big rainbow in the sky.", "Later, the sun came out again.",
                "Soon the rain stopped, and a rainbow came out.")
RAIN_MORAL = Part(
    "{A} learned that a rainy day can be fun too.", "It was the best picnic ever.",
    "\"I love rainy days now,\" said {A.name}.",
)


def rainy(t: Teller, c: dict) -> None:
    _setting(t, c)
    t.tell(RAIN_PLAN)
    t.tell(RAIN_PACK)
    if c["F_fav"]:
        t.maybe(0.5, FAV_FOOD)
    t.tell(RAIN_PROBLEM)
    t.tell(RAIN_SAD)
    t.tell(RAIN_FIX)
    t.maybe(0.7, RAIN_BOW)
    t.maybe(0.5, FEEL_GOOD)
    t.tell(RAIN_MORAL)
    t.ask("What was the weather like?", "rainy", "It was rainy.")
    t.ask("What food did they bring?", "{F}", "They brought {F}.")


PLANT_START = Part(
    "{T}, {P.name} gave {A.name} some {S} seeds.", "{A} found a little bag of {S} seeds.",
    ("{T}, {A} and {P.name} were {L.at}.", "{P} had some {S} seeds."),
)
PLANT_DIG = Part(
    "{A} dug a little hole {L.at} and put the seeds in the ground.",
    ("{A} made a row of holes {L.at}.", "{A} put one seed in each hole."),
)
PLANT_CARE = Part("Every [day|morning], {A} gave the seeds some water.", "{A} watered the ground every [morning|day].",
                  "The sun was warm, and {A} gave the seeds water.")
PLANT_WAIT = Part(
    ("But after a few days, nothing grew.", "\"Why is nothing growing?\" {A} asked."),
    ("{A} waited and waited, but nothing came up.", "{A} felt {bad}."),
)
PLANT_HELP = Part(
    "\"Plants need time, water and sun,\" said {P.name}. \"Be patient.\"",
    ("{P.name} smiled.", "\"Seeds grow slowly. Keep giving them water,\" {P} said."),
)
PLANT_GROW = Part(
    ("One morning, {A} saw a tiny green sprout!", "Soon there {S.was} {S.grown} {L.at}."),
    ("After many days, little green leaves came up.", "Then, at last, there {S.was} {S.grown}."),
)
PLANT_MORAL = Part("{A} learned that good things take time.", "\"I grew them [myself|all by myself]!\" said {A.name}.",
                   "{A} was so proud of {A.pos} plants.")


def plant(t: Teller, c: dict) -> None:
    _setting(t, c)
    t.tell(PLANT_START)
    t.tell(PLANT_DIG)
    t.tell(PLANT_CARE)
    t.tell(PLANT_WAIT)
    t.tell(PLANT_HELP)
    t.tell(PLANT_GROW)
    t.maybe(0.5, FEEL_GOOD)
    t.tell(PLANT_MORAL)
    t.ask("What did {A} plant?", "{S.key}", "{A} planted {S.crop}.")
    t.ask("What do plants need to grow?", "water", "Plants need water and sun to grow.")


# --------------------------------------------------------------------------------------------------
# plot table: the places each plot fits and the things it uses

@dataclass(frozen=True)
class Plot:
    name: str
    tell: Callable[[Teller, dict], None]
    places: tuple[str, ...]
    thing_tag: str = ""  # THINGS with this tag may be the story's object


OUTDOOR = ("park", "garden", "beach", "forest", "farm", "backyard", "river", "hill", "meadow", "pond", "playground")
PLOTS: tuple[Plot, ...] = (
    Plot("lost", lost, OUTDOOR + ("school", "library", "zoo", "market"), "lost"),
    Plot("stuck", stuck, ("park", "garden", "backyard", "playground", "hill", "meadow", "farm", "school"), "fly"),
    Plot("broken", broken, ("kitchen", "bedroom", "school", "backyard", "playground", "park"), "break"),
    Plot("share", share, ("park", "school", "beach", "playground", "meadow", "river", "hill", "zoo", "pond")),
    Plot("fear", fear, ("forest", "backyard", "farm", "pond", "garden", "river", "bedroom", "kitchen")),
    Plot("learn", learn, ("park", "playground", "beach", "backyard", "school", "library", "pond", "river")),
    Plot("gift", gift, ("kitchen", "bedroom", "garden", "meadow", "school", "beach", "forest")),
    Plot("pup", pup, ("park", "farm", "forest", "meadow", "pond", "river", "garden", "backyard")),
    Plot("rainy", rainy, ("park", "beach", "meadow", "hill", "garden", "backyard", "zoo", "playground")),
    Plot("plant", plant, ("garden", "backyard", "farm")),
)
PLOT_BY_NAME = {p.name: p for p in PLOTS}

# Per-thing play sentences for the stuck plot (past tense, after the subject).
PLAY = {"kite": "flew the kite high in the sky", "ball": "threw the ball up high", "balloon": "ran with the balloon",
        "hat": "threw the hat up in the air", "scarf": "waved the scarf in the wind",
        "ribbon": "waved the ribbon in the air", "frisbee": "threw the frisbee far",
        "plane": "threw the plane up into the air"}
INDOOR_OK = {"cup", "bowl", "lamp", "clock", "vase"}  # breakable things that stay inside
# Skills for the learn plot: (verb, rest, places it fits or () for anywhere).
SKILLS = (
    ("ride", "a bike", ("park", "playground", "backyard")), ("swim", "", ("beach", "pond", "river")),
    ("climb", "a tree", ("park", "backyard")), ("jump", "rope", ("playground", "school", "backyard", "park")),
    ("read", "a book", ("library", "school")), ("whistle", "", ()), ("catch", "a ball", ("park", "playground",
     "beach", "backyard")),
    ("kick", "a ball far", ("park", "playground", "backyard", "beach")), ("swing", "high", ("playground", "park",
     "backyard")),
    ("build", "a sand castle", ("beach",)), ("skip", "stones", ("pond", "river")), ("hop", "on one foot", ()),
    ("sing", "a song", ("school",)), ("write", "a story", ("school", "library")), ("draw", "a cat", ("school",
     "library")),
)
# Gifts: (action, "a noun", detail sentence, places).
GIFTS = (
    ("make a card", "a card", "{A} drew {acol} heart on the card and wrote \"I love you\" inside.", ("bedroom",
     "school", "kitchen")),
    ("draw a picture", "a picture", "{A} drew a picture of {P.name} and {A.name} holding hands.", ("bedroom",
     "school")),
    ("pick some flowers", "some flowers", "{A} picked the prettiest {col} flowers {A} could find.", ("garden",
     "meadow", "forest")),
    ("bake a cake", "a cake", "{A} mixed the flour and eggs, and the cake came out soft and sweet.", ("kitchen",)),
    ("bake some cookies", "some cookies", "{A} made the cookies round and put one on {acol} plate.", ("kitchen",)),
    ("make a necklace", "a necklace", "{A} found pretty shells and put them on a string.", ("beach",)),
    ("make a crown", "a crown", "{A} made a crown of leaves and little {col} flowers.", ("forest", "meadow", "garden")),
)
REVEALS = {  # place -> animals whose sound can scare and then delight
    "forest": ("owl", "fox"), "backyard": ("owl", "frog", "cat"), "farm": ("cow", "pig", "hen", "owl", "horse"),
    "pond": ("frog", "duck"), "garden": ("frog", "owl", "cat"), "river": ("frog", "duck"),
    "bedroom": ("cat", "dog", "mouse"), "kitchen": ("mouse", "cat", "dog"),
}
PUPS = {"puppy": ("dog", "yip", "woof"), "kitten": ("cat", "mew", "meow"), "duckling": ("duck", "peep", "quack"),
        "lamb": ("sheep", "baa", "baa"), "chick": ("hen", "peep", "cluck"), "calf": ("cow", "moo", "moo"),
        "foal": ("horse", "neigh", "neigh")}
PUP_PLACES = {"farm": ("lamb", "chick", "calf", "foal", "duckling"), "pond": ("duckling",), "river": ("duckling",)}
GIFT_DETAIL = {g[1]: Part(g[2]) for g in GIFTS}
SEEDS = {"carrot": "carrots", "strawberry": "strawberries", "pea": "peas", "corn": "corn", "sunflower": ""}


