"""English word tokens as DataTrove 0.10 counts them, without DataTrove or spaCy.

DataTrove's Gopher, C4 and FineWeb filters split English text with spaCy 3's rule-based tokenizer
(`spacy.blank("en")`, plus its `sentencizer` for C4's sentence count). Its tokens are not words:
`foo():` is `foo ( ):`, `don't` is `do n't`, `id` is `i d`, a sentence-final `.` is a token of its
own, and the filters count all of them. `compat: datatrove` (quality.py) needs the same tokens, so
this module implements the same *rules* with our own regular expressions:

1. text is cut at whitespace; every run of whitespace other than one plain space would be a
   whitespace token, which DataTrove strips away (they only matter to sentence counting);
2. a piece that is a special case (contractions, abbreviations such as `e.g.`, emoticons) is
   split as the special case says;
3. otherwise prefixes (opening punctuation, quotes, currency, symbols) and suffixes (closing
   punctuation, `'s`, units after digits, a `.` after a lower-case letter, digit or punctuation)
   are peeled off, re-checking special cases after each cut;
4. what is left is kept whole if it looks like a URL or a dotted name (`os.path.join`), else cut at
   infixes (`...`, `-` or `/` between letters, `,` between letters, `.` between lower and upper);
5. token sequences that spell a special case containing punctuation (`)` `:` -> `):`, `'` `'` ->
   `''`) are merged, longest first, as spaCy's special-case matcher does; a sequence across one
   space is not merged but still competes with the sequences it overlaps.

Character classes follow Unicode properties (`regex` module) where spaCy lists ranges by hand. On
the 3,000 real documentation pages of benchmarks/datatrove_compat.py the tokens are identical to
spaCy 3.8's (7.1 million tokens), and so are the sentence counts of the 513,651 lines of half of
them. Every piece is tokenized once per process (cached), so once the pieces of a corpus have been
seen most of the cost is `str.split` and dictionary lookups.
"""

from __future__ import annotations

import re
import unicodedata
from itertools import chain, compress

import regex

# ---- character classes -----------------------------------------------------------------------

_LOWER = r"\p{Ll}\p{Lo}"  # lower-case letters and letters of scripts without case
_UPPER = r"\p{Lu}\p{Lo}"
_ALPHA = r"\p{L}"
_QUOTES = "'\"”“`‘´’‚,„»«「」『』（）〔〕【】《》〈〉〈〉⟦⟧"
_PUNCT = "…,:;!?¿؟¡()[]{}<>_#*&。？！，、；：～·।،۔؛٪"
_CURRENCY = ["$", "£", "€", "¥", "฿", "US$", "C$", "A$", "₽", "﷼", "₴"] + [chr(c) for c in range(0x20A0, 0x20C0)]
_ICON = r"\p{So}"  # symbols: ©, °, box drawing, emoji...
_DIGITS = frozenset("0123456789")
_HYPHENS = ["-", "–", "—", "--", "---", "——", "~"]
_UNITS = (
    "km km² km³ m m² m³ dm dm² dm³ cm cm² cm³ mm mm² mm³ ha µm nm yd in ft kg g mg µg t lb oz m/s km/h "
    "kmh mph hPa Pa mbar mb MB kb KB gb GB tb TB T G M K %"
).split()


def _alt(items) -> str:
    return "|".join(re.escape(x) for x in items)


def _cls(chars: str) -> str:
    return "".join("\\" + c if c in "\\]^-[" else c for c in chars)


# Prefixes: tried in this order at the start of a piece (the first alternative that matches wins).
_PREFIX = regex.compile(
    "^(?:"
    + "|".join(
        [_alt(["§", "%", "=", "—", "–"]), r"\+(?![0-9])", _alt(list(_PUNCT)), "……", r"\.\.+", _alt(list(_QUOTES))]
        + [_alt(_CURRENCY), f"[{_ICON}]"]
    )
    + ")"
)
# The characters after which a final `.` is split off (digits, lower-case letters, %, ², -, + and
# punctuation or quote marks; spaCy's class also holds `|`).
_DOT_AFTER = f"0-9{_LOWER}%²\\-+{_cls(_PUNCT)}{_cls(_QUOTES)}|?:()"
# Suffixes: the match that starts leftmost wins.
_SUFFIX = regex.compile(
    "(?:"
    + "|".join(
        [
            _alt(list(_PUNCT)),
            "……",
            r"\.\.+",
            _alt(list(_QUOTES)),
            f"[{_ICON}]",
            _alt(["'s", "'S", "’s", "’S", "—", "–"]),
        ]
        + [r"(?<=[0-9])\+", r"(?<=°[FfCcKk])\.", f"(?<=[0-9])(?:{_alt(_CURRENCY)})", f"(?<=[0-9])(?:{_alt(_UNITS)})"]
        + [f"(?<=[{_DOT_AFTER}])\\.", f"(?<=[{_UPPER}][{_UPPER}])\\."]
    )
    + r")$"
)
_INFIX = regex.compile(
    "|".join(
        [r"\.\.+", "…", f"[{_ICON}]", r"(?<=[0-9])[+\-*^](?=[0-9-])"]
        + [f"(?<=[{_LOWER}{_cls(_QUOTES)}])\\.(?=[{_UPPER}{_cls(_QUOTES)}])", f"(?<=[{_ALPHA}]),(?=[{_ALPHA}])"]
        + [f"(?<=[{_ALPHA}0-9])(?:{_alt(_HYPHENS)})(?=[{_ALPHA}])", f"(?<=[{_ALPHA}0-9])[:<>=/](?=[{_ALPHA}])"]
    )
)
_INFIX_CHAR = regex.compile(f"[.…+\\-*^,–—~:<>=/{_ICON}]").search  # a character some infix starts with
_HOST_CHAR = "A-Za-z0-9\u00a1-\uffff"
# A URL, or anything shaped like a host name (`docs.python.org/3/`, `os.path.join`, `file.txt`);
# IP addresses of private networks do not count.
_URL = regex.compile(
    r"^(?:[\w+\-.]{2,}://)?(?:\S+(?::\S*)?@)?(?:"
    r"(?!(?:10|127)(?:\.\d{1,3}){3})(?!(?:169\.254|192\.168)(?:\.\d{1,3}){2})(?!172\.(?:1[6-9]|2\d|3[01])(?:\.\d{1,3}){2})"
    r"(?:[1-9]\d?|1\d\d|2[01]\d|22[0-3])(?:\.(?:1?\d{1,2}|2[0-4]\d|25[0-5])){2}\.(?:[1-9]\d?|1\d\d|2[0-4]\d|25[0-4])"
    f"|(?:(?:[{_HOST_CHAR}][{_HOST_CHAR}_-]{{0,62}})?[{_HOST_CHAR}]\\.)+[{_LOWER}]{{2,63}})"
    r"(?::\d{2,5})?(?:[/?#]\S*)?$"
)


# ---- special cases (spaCy's English tokenizer exceptions, rebuilt from their rules) ---------------

_EMOTICONS = r"""
:) :-) :)) :-)) :))) :-))) (: (-: =) (= :] :-] [: [-: [= =] :o) (o: :} :-} 8) 8-) (-8 ;) ;-) (; (-;
:( :-( :(( :-(( :((( :-((( ): )-: =( >:( :') :'-) :'( :'-( :/ :-/ =/ =| :| :-| ]= =[ :1 :P :-P :p
:-p :O :-O :o :-o :0 :-0 :() >:o :* :-* :3 :-3 =3 :> :-> :X :-X :x :-x :D :-D ;D ;-D =D xD XD xDD
XDD 8D 8-D ^_^ ^__^ ^___^ >.< >.> <.< ._. ;_; -_- -__- v.v V.V v_v V_V o_o o_O O_o O_O 0_o o_0 0_0
o.O O.o O.O o.o 0.0 o.0 0.o @_@ <3 <33 <333 </3 (^_^) (-_-) (._.) (>_<) (*_*) (¬_¬) ಠ_ಠ ಠ︵ಠ (ಠ_ಠ)
¯\(ツ)/¯ (╯°□°）╯︵┻━┻ ><(((*>
""".split()
_WHOLE = (
    [
        "'",
        '\\")',
        "\\n",
        "\\t",
        "—",
        "<space>",
        "''",
        "C++",
        "ä.",
        "ö.",
        "ü.",
        "'S",
        "'s",
        "\u2018S",
        "\u2018s",
        "and/or",
        "w/o",
    ]
    + ["'re", "'d", "'Cause", "'cause", "'cos", "'Cos", "'coz", "'Coz", "'cuz", "'Cuz", "'bout", "ma'am", "Ma'am"]
    + ["o'clock", "O'clock"]
    + [f"{c}." for c in "abcdefghijklmnopqrstuvwxyz"]
    + [f"{w}{end}" for w in ("lovin", "Lovin", "havin", "Havin", "doin", "Doin", "goin", "Goin") for end in ("", "'")]
    + [
        f"{w}{end}"
        for w in ("nothin", "Nothin", "nuthin", "Nuthin", "ol", "Ol", "somethin", "Somethin")
        for end in ("", "'")
    ]
    + ["em", "'em", "ll", "'ll", "nuff", "'nuff"]
    # abbreviations that keep their period
    + "a.m. p.m. Adm. Bros. co. Co. Corp. D.C. Dr. e.g. E.g. E.G. Gen. Gov. i.e. I.e. I.E. Inc. Jr. Ltd.".split()
    + "Md. Messrs. Mo. Mont. Mr. Mrs. Ms. Ph.D. Prof. Rep. Rev. Sen. St. vs. v.s. Mt.".split()
    + "Ak. Ala. Apr. Ariz. Ark. Aug. Calif. Colo. Conn. Dec. Del. Feb. Fla. Ga. Ia. Id. Ill. Ind. Jan.".split()
    + "Jul. Jun. Kan. Kans. Ky. La. Mar. Mass. Mich. Minn. Miss. N.C. N.D. N.H. N.J. N.M. N.Y. Neb.".split()
    + "Nebr. Nev. Nov. Oct. Okla. Ore. Pa. S.C. Sep. Sept. Tenn. Va. Wash. Wis.".split()
    + _EMOTICONS
)
# Contractions: a stem followed by clitics ("+" separates tokens), written with and without the
# apostrophe ("don't" -> do n't, "dont" -> do nt).
_PRONOUN = ["'ll", "'ll+'ve", "'d", "'d+'ve"]
_CLITIC_SETS = {
    "i": ["'m", "'m+a"] + _PRONOUN + ["'ve"],
    **{w: _PRONOUN + ["'ve", "'re"] for w in ("you", "we", "they")},
    **{w: _PRONOUN + ["'s"] for w in ("he", "she", "it")},
    **{w: ["'s", "'re", "'ve"] + _PRONOUN for w in "who what when where why how there".split()},
    **{w: ["'s"] + _PRONOUN for w in ("that", "this")},
    **{w: ["'re", "'ve"] + _PRONOUN for w in ("these", "those")},
    **{v: ["n't", "n't+'ve"] for v in "ca do does did had may need ought sha wo".split()},
    **{v: ["n't", "n't+'ve", "'ve"] for v in "could might must should would".split()},
    **{v: ["n't"] for v in "ai are is was were have has dare".split()},
}
_NOT_CONTRACTIONS = {"Ill", "ill", "Its", "its", "Hell", "hell", "Shell", "shell", "Shed", "shed", "were", "Were"}
_NOT_CONTRACTIONS |= {"Well", "well", "Whore", "whore"}


def _specials() -> dict[str, tuple[str, ...]]:
    table: dict[str, tuple[str, ...]] = {s: (s,) for s in _WHOLE}
    for stem, endings in _CLITIC_SETS.items():
        for orth in dict.fromkeys([stem, stem.title()]):
            for ending in endings:
                parts = ending.split("+")
                table[orth + "".join(parts)] = (orth, *parts)
                bare = [p.replace("'", "") for p in parts]
                table[orth + "".join(bare)] = (orth, *bare)
    for h in range(1, 13):
        for period in ("a.m.", "am", "p.m.", "pm"):
            table[f"{h}{period}"] = (str(h), period)
    table.update(
        {
            "y'all": ("y'", "all"),
            "yall": ("y", "all"),
            "how'd'y": ("how", "'d", "'y"),
            "How'd'y": ("How", "'d", "'y"),
            "not've": ("not", "'ve"),
            "notve": ("not", "ve"),
            "Not've": ("Not", "'ve"),
            "Notve": ("Not", "ve"),
            "cannot": ("can", "not"),
            "Cannot": ("Can", "not"),
            "gonna": ("gon", "na"),
            "Gonna": ("Gon", "na"),
            "gotta": ("got", "ta"),
            "Gotta": ("Got", "ta"),
            "let's": ("let", "'s"),
            "Let's": ("Let", "'s"),
            "c'mon": ("c'm", "on"),
            "C'mon": ("C'm", "on"),
        }
    )
    for unit in "cfkCFK":
        table[f"°{unit}."] = ("°", unit, ".")
    for word in _NOT_CONTRACTIONS:
        table.pop(word, None)
    for text, parts in list(table.items()):  # every apostrophe may also be typeset as ’
        if "'" in text:
            table.setdefault(text.replace("'", "’"), tuple(p.replace("'", "’") for p in parts))
    return table


SPECIALS = _specials()


# ---- the tokenizer -------------------------------------------------------------------------------


def _prefix_len(s: str) -> int:
    if s[:1].isalnum() and not s.startswith(("US$", "C$", "A$")):  # prefixes are symbols
        return 0
    m = _PREFIX.match(s)
    return m.end() if m else 0


def _suffix_len(s: str) -> int:
    """Length of the suffix that starts leftmost. Every suffix is at most 4 characters long but a
    run of dots, so only the end of `s` is searched (look-behinds still see before it)."""
    if s.endswith(".."):
        return len(s) - len(s.rstrip("."))
    if s[-1:].isalnum() and _DIGITS.isdisjoint(s[-5:]) and not s.endswith(("'s", "'S", "’s", "’S")):
        return 0  # a letter or digit ends a suffix only in 's or in a unit after a number
    m = _SUFFIX.search(s, max(0, len(s) - 5))
    return len(s) - m.start() if m else 0


def _split_affixes(s: str, specials: bool) -> tuple[list[str], str, list[str]]:
    """Peel prefixes and suffixes off `s` until neither changes it or a special case remains."""
    prefixes: list[str] = []
    suffixes: list[str] = []
    last = -1
    while s and len(s) != last:
        if specials and s in SPECIALS:
            break
        last = len(s)
        pre = _prefix_len(s)
        if pre and specials and s[pre:] in SPECIALS:
            prefixes.append(s[:pre])
            s = s[pre:]
            break
        suf = _suffix_len(s[pre:])
        if suf and specials and s[:-suf] in SPECIALS:
            suffixes.append(s[-suf:])
            s = s[:-suf]
            break
        if pre:
            prefixes.append(s[:pre])
        if suf:
            suffixes.append(s[-suf:])
        s = s[pre : len(s) - suf]
    return prefixes, s, suffixes


def _split_infixes(s: str) -> list[str]:
    out: list[str] = []
    start = 0
    for m in _INFIX.finditer(s):
        a, b = m.span()
        if a == 0:  # an infix at the very start is not split off
            continue
        if a != start:
            out.append(s[start:a])
        if a != b:
            out.append(s[a:b])
        start = b
    if s[start:]:
        out.append(s[start:])
    return out


def _tokenize_piece(piece: str, specials: bool = True) -> tuple[str, ...]:
    """Tokens of a piece of text without whitespace, before special cases are merged (step 5)."""
    if specials and piece in SPECIALS:
        return SPECIALS[piece]
    if piece.isalpha() or piece.isdecimal():  # no rule cuts letters alone or digits alone
        return (piece,)
    prefixes, core, suffixes = _split_affixes(piece, specials)
    tokens = prefixes
    if core:
        if specials and core in SPECIALS:
            tokens.extend(SPECIALS[core])
        elif "." in core and _URL.match(core):
            tokens.append(core)
        elif _INFIX_CHAR(core) is None:  # infixes are punctuation or symbols
            tokens.append(core)
        else:
            tokens.extend(_split_infixes(core))
    tokens.extend(reversed(suffixes))
    return tuple(tokens)


def _special_patterns() -> dict[str, list[tuple[tuple[str, ...], tuple[str, ...]]]]:
    """Special cases that affix/infix rules would cut, as the token sequences those rules make:
    first token -> [(pattern, special-case tokens)]. (A one-token pattern that is its own special
    case changes nothing and, being shortest, blocks nothing: left out.)"""
    table: dict[str, list] = {}
    for text, parts in SPECIALS.items():
        if not (_prefix_len(text) or _suffix_len(text) or _INFIX.search(text)):
            continue
        pattern = _tokenize_piece(text, specials=False)
        if len(pattern) > 1 or pattern != parts:
            table.setdefault(pattern[0], []).append((pattern, parts))
    return table


_PATTERNS = _special_patterns()
_ALL_PATTERNS = [pattern for group in _PATTERNS.values() for pattern, _ in group]
assert min(map(len, _ALL_PATTERNS)) > 1, "every pattern spans two tokens or more"
_LONGEST = max(map(len, _ALL_PATTERNS))
_PAIRS = {pattern[:2] for pattern in _ALL_PATTERNS}  # a match needs one of these token pairs
# Each pattern cut in two (the part before the cut ends one piece, the rest starts the next),
# indexed by the first token after the cut and by the last token before it.
_CUTS = [(pattern[:cut], pattern[cut:]) for pattern in _ALL_PATTERNS for cut in range(1, len(pattern))]
_CUTS_BY_FIRST: dict[str, list] = {}
_CUTS_BY_LAST: dict[str, list] = {}
for _head, _tail in _CUTS:
    _CUTS_BY_FIRST.setdefault(_tail[0], []).append((_head, _tail))
    _CUTS_BY_LAST.setdefault(_head[-1], []).append((_head, _tail))


def _merge(tokens: list[str], owner: list[int]) -> list[str]:
    """Step 5 on a run of tokens with no whitespace token between them (`owner[i]`: the piece of
    token i). All matches of special-case patterns compete, longest first, then leftmost; one is
    dropped when its first or last token lies in a better match. A winner that spans two pieces
    (their text holds a space) changes nothing, but it still wins over the matches it overlaps."""
    found = []
    for i, tok in enumerate(tokens):
        for pattern, parts in _PATTERNS.get(tok, ()):
            end = i + len(pattern)
            if tuple(tokens[i:end]) == pattern:
                found.append((i - end, i, end, parts))
    if not found:
        return tokens
    seen: set[int] = set()
    winners = {}
    for _, i, end, parts in sorted(found, key=lambda f: (f[0], f[1])):
        if i not in seen and end - 1 not in seen and owner[i] == owner[end - 1]:
            winners[i] = (end, parts)
        seen.update(range(i, end))
    out: list[str] = []
    i = 0
    while i < len(tokens):
        if i in winners:
            end, parts = winners[i]
            out.extend(parts)
            i = end
        else:
            out.append(tokens[i])
            i += 1
    return out


def _neighbours_that_matter(tokens: tuple[str, ...]) -> tuple[frozenset, frozenset] | None:
    """For a piece with these tokens: the last tokens of a previous piece and the first tokens of a
    next piece with which some pattern would match across the boundary; None when a pattern
    could span the whole piece (then every neighbour matters)."""
    before, after = set(), set()
    for head, tail in _CUTS_BY_FIRST.get(tokens[0], ()):
        if len(tokens) < len(tail):
            if tail[: len(tokens)] == tokens:
                return None
        elif tokens[: len(tail)] == tail:
            before.add(head[-1])
    for head, tail in _CUTS_BY_LAST.get(tokens[-1], ()):
        if len(tokens) < len(head):
            if head[-len(tokens) :] == tokens:
                return None
        elif tokens[-len(head) :] == head:
            after.add(tail[0])
    return frozenset(before), frozenset(after)


class _PieceCache(dict):
    """piece -> its tokens before step 5; pieces repeat, so most documents are dict lookups.
    Pieces whose own tokens spell a special case are also kept in `_MERGING`: merged, and which
    neighbours could form a competing match across the boundary."""

    def __missing__(self, piece: str) -> tuple[str, ...]:
        if len(self) > 1_000_000:  # the caches built on this one are emptied with it
            self.clear()
            _MERGING.clear()
            _PIECE_KINDS.clear()
        value = self[piece] = _tokenize_piece(piece)
        if len(value) > 1 and any(map(_PAIRS.__contains__, zip(value, value[1:]))):
            merged = tuple(_merge(list(value), [0] * len(value)))
            if merged != value:
                _MERGING[piece] = (merged, _neighbours_that_matter(value))
        return value


_PIECES = _PieceCache()
_MERGING: dict[str, tuple] = {}


def _may_cross(per_piece: list[tuple[str, ...]], k: int, risk: tuple | None) -> bool:
    if risk is None:
        return True
    before, after = risk
    return bool(
        (k > 0 and per_piece[k - 1] and per_piece[k - 1][-1] in before)
        or (k + 1 < len(per_piece) and per_piece[k + 1] and per_piece[k + 1][0] in after)
    )


def _crosses(per_piece: list[tuple[str, ...]], k: int) -> bool:
    """Whether a special-case pattern could match across a boundary of piece k (were its
    neighbours joined by single spaces), which could block a merge inside piece k."""
    left: list[str] = []
    for toks in reversed(per_piece[max(0, k - _LONGEST) : k]):
        left[:0] = toks
    right: list[str] = []
    for toks in per_piece[k + 1 : k + 1 + _LONGEST]:
        right.extend(toks)
    left, right = left[-_LONGEST:], right[:_LONGEST]
    window = left + list(per_piece[k]) + right
    first, last = len(left), len(left) + len(per_piece[k])
    for i, tok in enumerate(window):
        for pattern, _ in _PATTERNS.get(tok, ()):
            end = i + len(pattern)
            if (i < first < end or i < last < end) and tuple(window[i:end]) == pattern:
                return True
    return False


# Whitespace that is not exactly one space: it becomes a whitespace token, which ends a run of
# pieces that step 5 may match across.
_BREAK = re.compile(r"\s{2,}|[^\S ]")


def _run_tokens(run: str) -> list[str]:
    """Tokens of a run of pieces separated by single spaces."""
    pieces = run.split(" ")
    per_piece = list(map(_PIECES.__getitem__, pieces))
    if _MERGING.keys().isdisjoint(pieces):
        return list(chain.from_iterable(per_piece))
    owner = [k for k, toks in enumerate(per_piece) for _ in toks]
    return _merge(list(chain.from_iterable(per_piece)), owner)


def _exact_tokens(text: str, spaces: bool) -> list[str | None]:
    """Tokens with step 5 applied across each run (None marks a whitespace token when `spaces`)."""
    out: list = []
    runs = _BREAK.split(text)
    for i, run in enumerate(runs):
        if i and spaces:
            out.append(None)
        if run.startswith(" "):  # a space after a break (or at the start) is a token of its own
            if spaces and i == 0:
                out.append(None)
            run = run[1:]
        if run.endswith(" "):  # one space before a break or at the end joins nothing
            run = run[:-1]
        if run:
            out.extend(_run_tokens(run))
    return out


def words(text: str) -> list[str]:
    """DataTrove's `split_into_words(text, "en")`: spaCy's tokens, whitespace tokens dropped."""
    pieces = text.split()
    per_piece = list(map(_PIECES.__getitem__, pieces))
    if _MERGING.keys().isdisjoint(pieces):
        return list(chain.from_iterable(per_piece))
    hits = list(compress(range(len(pieces)), map(_MERGING.__contains__, pieces)))
    merged = [_MERGING[pieces[k]] for k in hits]
    if any(_may_cross(per_piece, k, risk) and _crosses(per_piece, k) for k, (_, risk) in zip(hits, merged)):
        tokens: list[str] = []  # rare: redo the lines where step 5 has work
        for line in text.split("\n"):
            pieces = line.split()
            if _MERGING.keys().isdisjoint(pieces):
                tokens.extend(chain.from_iterable(map(_PIECES.__getitem__, pieces)))
            else:
                tokens.extend(_exact_tokens(line, spaces=False))
        return tokens
    for k, (toks, _) in zip(hits, merged):
        per_piece[k] = toks
    return list(chain.from_iterable(per_piece))


# ---- sentences (spaCy's `sentencizer`, as DataTrove's C4 filter counts them) --------------------

# Tokens that end a sentence: the sentencizer's default characters (Unicode sentence terminals).
SENTENCE_END = frozenset(
    "\u0021\u002e\u003f\u0589\u061f\u06d4\u0700\u0701\u0702\u07f9\u0964\u0965\u104a\u104b\u1362\u1367\u1368"
    "\u166e\u1735\u1736\u1803\u1809\u1944\u1945\u1aa8\u1aa9\u1aaa\u1aab\u1b5a\u1b5b\u1b5e\u1b5f\u1c3b\u1c3c"
    "\u1c7e\u1c7f\u203c\u203d\u2047\u2048\u2049\u2e2e\u2e3c\u3002\ua4ff\ua60e\ua60f\ua6f3\ua6f7\ua876\ua877"
    "\ua8ce\ua8cf\ua92f\ua9c8\ua9c9\uaa5d\uaa5e\uaa5f\uaaf0\uaaf1\uabeb\ufe52\ufe56\ufe57\uff01\uff0e\uff1f"
    "\uff61\U00010a56\U00010a57\U00011047\U00011048\U000110be\U000110bf\U000110c0\U000110c1\U00011141"
    "\U00011142\U00011143\U000111c5\U000111c6\U000111cd\U000111de\U000111df\U00011238\U00011239\U0001123b"
    "\U0001123c\U000112a9\U0001144b\U0001144c\U000115c2\U000115c3\U000115c9\U000115ca\U000115cb\U000115cc"
    "\U000115cd\U000115ce\U000115cf\U000115d0\U000115d1\U000115d2\U000115d3\U000115d4\U000115d5\U000115d6"
    "\U000115d7\U00011641\U00011642\U0001173c\U0001173d\U0001173e\U00011a42\U00011a43\U00011a9b\U00011a9c"
    "\U00011c41\U00011c42\U00016a6e\U00016a6f\U00016af5\U00016b37\U00016b38\U00016b44\U0001bc9f\U0001da88"
)
_TURN = re.compile("2[12]*0")  # a sentence end, maybe more punctuation, then the next sentence's first token


class _KindCache(dict):
    """token -> "2" (ends a sentence), "1" (other punctuation: does not start one), "0" (a word)."""

    def __missing__(self, token: str) -> str:
        if len(self) > 1_000_000:
            self.clear()
        if token in SENTENCE_END:
            kind = "2"
        elif all(unicodedata.category(c)[0] == "P" for c in token):
            kind = "1"
        else:
            kind = "0"
        self[token] = kind
        return kind


class _PieceKinds(dict):
    """piece -> the kinds of its tokens before step 5 (emptied with `_PIECES`)."""

    def __missing__(self, piece: str) -> str:
        value = "".join(map(_KINDS.__getitem__, _PIECES[piece]))
        self[piece] = value
        return value


_KINDS = _KindCache()
_PIECE_KINDS = _PieceKinds()


def sentence_count(text: str) -> int:
    """Sentences DataTrove's `split_into_sentences(text, "en")` returns (at least 1): a sentence
    starts at each token that is not punctuation and follows a sentence-ending token."""
    pieces = text.split(" ")
    codes = "".join(map(_PIECE_KINDS.__getitem__, pieces))
    if _BREAK.search(text) is not None or not _MERGING.keys().isdisjoint(pieces):
        tokens = _exact_tokens(text, spaces=True)
        codes = "".join("0" if t is None else _KINDS[t] for t in tokens)
    return 1 + len(_TURN.findall(codes))
