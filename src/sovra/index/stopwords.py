"""Compact stop-word lists for the languages sovra analyses with stop words.

Kept deliberately modest: function words only (articles, pronouns, prepositions,
conjunctions, auxiliaries). Removing content words would hurt recall more than the index
size it saves. Lists are lower case, with accents; the analyser also matches the
accent-free spelling of each entry, so "fur"/"für" and "tambien"/"también" both go.
"""

from __future__ import annotations

_EN = """
a about above after again against all am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further
had has have having he her here hers herself him himself his how i if in into is it its
itself just me more most my myself no nor not of off on once only or other our ours
ourselves out over own same she should so some such than that the their theirs them
themselves then there these they this those through to too under until up very was we were
what when where which while who whom why will with would you your yours yourself yourselves
"""

_DE = """
aber alle allem allen aller alles als also am an ander andere anderem anderen anderer
anderes auch auf aus bei bin bis bist da damit dann das dass dasselbe dazu dein deine
deinem deinen deiner dem den denn der derer des dessen dich die dies diese dieselbe
diesem diesen dieser dieses dir doch dort du durch ein eine einem einen einer eines er es
etwas euch euer eure für gegen gewesen hab habe haben hat hatte hatten hier hin hinter ich
ihm ihn ihnen ihr ihre ihrem ihren ihrer ihres im in indem ins ist jede jedem jeden jeder
jedes jene jenem jenen jener jenes jetzt kann kein keine keinem keinen keiner man manche
mein meine meinem meinen meiner mich mir mit muss musste nach nicht nichts noch nun nur ob
oder ohne sehr sein seine seinem seinen seiner sich sie sind so solche soll sollte sondern
sonst über um und uns unser unsere unter vom von vor war waren warst was weil welche
welchem welchen welcher welches wenn werde werden wie wieder will wir wird wirst wo wollen
wollte würde würden zu zum zur zwar zwischen
"""

_ES = """
a al algo algunas algunos ante antes como con contra cual cuando de del desde donde durante
e el él ella ellas ellos en entre era erais eran eras eres es esa esas ese eso esos esta
estaba estado estamos estar estas este esto estos estoy fue fueron fui ha habéis había han
has hay he la las le les lo los más me mi mis mucho muchos muy nada ni no nos nosotras
nosotros nuestra nuestras nuestro nuestros o os otra otras otro otros para pero poco por
porque que quien quienes qué se sea sean ser si sí siendo sin sobre sois somos son soy su
sus también tanto te tenemos tener tengo ti tiene tienen todo todos tu tus tú un una uno
unos vosotras vosotros vuestra vuestro y ya yo
"""

_FR = """
a ai aie aient ait as au aux avait avais avant avec avez avions avoir c ce ceci cela celle
celles celui ces cet cette d dans de des donc dont du elle elles en entre es est et étaient
étais était été êtes étions être eu eux fait il ils j je l la le les leur leurs lui m ma
mais me même mes moi mon n ne ni nos notre nous on ont ou où par pas pour qu que quel quelle
quelles quels qui s sa sans se sera ses si son sont sous sur ta te tes toi ton tous tout
toute toutes tu un une vos votre vous y à
"""

_AR = """
في من إلى على عن مع هذا هذه ذلك تلك التي الذي الذين اللذين اللتين اللواتي هو هي هم هن
أنا نحن أنت أنتم أنتن كان كانت كانوا يكون تكون ليس لم لن لا ما ماذا متى أين كيف هل قد
ثم أو أم بل لكن إن أن إذا إذ حتى كل بعض غير بين عند عندما منذ خلال بعد قبل حول دون لدى
لقد إلا أي أيضا فقط مثل وقد وكان وهو وهي ولا وما وفي ومن وعلى وأن وإن لها له لهم بها به
بهم فيها فيه عليه عليها منه منها هناك هنا
"""

STOP_WORDS: dict[str, frozenset[str]] = {
    lang: frozenset(words.split())
    for lang, words in (("en", _EN), ("de", _DE), ("es", _ES), ("fr", _FR), ("ar", _AR))
}
"""Stop words per ISO 639-1 code. Languages not listed get no stop-word removal."""
