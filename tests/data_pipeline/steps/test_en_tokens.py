"""English tokens and sentence counts as spaCy 3.8 (DataTrove's tokenizer) makes them; expected
values were produced by spaCy itself (`spacy.blank("en")`, DataTrove's split_into_words /
split_into_sentences)."""

from __future__ import annotations

import pytest

from data_pipeline.steps.en_tokens import sentence_count, words


@pytest.mark.parametrize(
    "text, expected",
    [
        ("def foo(): pass", ["def", "foo", "(", "):", "pass"]),  # `) :` spells the emoticon `):`
        ("see section 8) now", ["see", "section", "8)", "now"]),
        (
            "it's that's thats don't dont Dont id",
            ["it", "'s", "that", "'s", "that", "s", "do", "n't", "do", "nt", "Do", "nt", "i", "d"],
        ),
        (
            "e.g. i.e., (e.g. U.S. A. a. Python. API. --help -v os.path.join() file.txt https://x.org/a/b. 10km 50% US$5 $5",
            [
                "e.g.",
                "i.e.",
                ",",
                "(",
                "e.g.",
                "U.S.",
                "A.",
                "a.",
                "Python",
                ".",
                "API",
                ".",
                "--help",
                "-v",
                "os.path.join",
                "(",
                ")",
            ]
            + ["file.txt", "https://x.org/a/b", ".", "10", "km", "50", "%", "US$", "5", "$", "5"],
        ),
        ("foo...bar a..b a....", ["foo", "...", "bar", "a", "..", "b", "a", "...."]),
        ("''quoted'' 's 'setup'", ["''", "quoted", "''", "'s", "'", "setup", "'"]),
        (
            "x-y x--y 2-3 a/b a:b a<b a=b 1/2 3.5 3,5 a,b",
            ["x", "-", "y", "x", "--", "y", "2", "-", "3", "a", "/", "b", "a", ":", "b"]
            + ["a", "<", "b", "a", "=", "b", "1/2", "3.5", "3,5", "a", ",", "b"],
        ),
        ("hello.World hello.world U.S.A. Ph.D.", ["hello", ".", "World", "hello.world", "U.S.A.", "Ph.D."]),
        ("5°C. this/and/or 1-8) 's'", ["5", "°", "C", ".", "this", "/", "and/or", "1", "-", "8)", "'s", "'"]),
        (
            "The user id is 5pm-ish, 10km away (approx.) & $20.",
            ["The", "user", "i", "d", "is", "5pm", "-", "ish", ",", "10", "km"]
            + ["away", "(", "approx", ".", ")", "&", "$", "20", "."],
        ),
        (
            "Mr. Smith paid US$5 for C++ books... or not?",
            ["Mr.", "Smith", "paid", "US$", "5", "for", "C++", "books", "...", "or", "not", "?"],
        ),
        ("x : ) y\n\tz  w", ["x", ":", ")", "y", "z", "w"]),  # whitespace tokens are dropped
        (": p.Parse(doc)", [":", "p", ".", "Parse(doc", ")"]),  # `: p` across a space blocks the special `p.`
    ],
)
def test_words(text, expected):
    assert words(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("One. Two. Three.", 3),
        ("Use e.g. this. Or that!", 2),
        ("Wait... what? Yes.", 2),
        ("a.  . b", 2),  # the double space is a whitespace token: it starts a sentence
        ("Call foo(). Then bar().", 2),
        ("Version 3.11 is out. See https://python.org/x. Done.", 3),
        ('He said "Hi." Then left.', 2),
        ("x?! y", 2),
        ("One sentence", 1),
    ],
)
def test_sentence_count(text, expected):
    assert sentence_count(text) == expected
