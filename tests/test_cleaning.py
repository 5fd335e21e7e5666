import pytest

from bench.cleaning import CLEANERS, make_cleaner


@pytest.mark.parametrize(
    ("steps", "text", "expected"),
    [
        (["strip_html"], "great<br />movie", "great movie"),
        (["unescape"], "fish &amp; chips &#39;ok&#39;", "fish & chips 'ok'"),
        (["nfkc"], "ｆｕｌｌ ﬁne", "full fine"),
        (["remove_control"], "a\u200bb\x00c\u00add\te", "abcd e"),
        (["collapse_whitespace"], "  a \n\n b\t c  ", "a b c"),
        (["lower"], "LOUD Noises", "loud noises"),
        (["replace_urls"], "see https://t.co/x1 and www.a.com now", "see http and http now"),
        (["replace_users"], "@united thanks, mail me@x.com", "@user thanks, mail me@x.com"),
        (
            [
                "strip_html",
                "unescape",
                "nfkc",
                "remove_control",
                "replace_urls",
                "replace_users",
                "collapse_whitespace",
            ],
            "<p>@Delta  ｌｏｖｅ &amp;\u200b http://x.y</p>",
            "@user love & http",
        ),
        (["remove_control", "collapse_whitespace"], "这个酒店 很好", "这个酒店 很好"),
    ],
)
def test_cleaning_steps(steps, text, expected):
    assert make_cleaner(steps)(text) == expected


def test_cleaning_order_is_the_recipe_order():
    # unescape before strip_html turns an escaped tag into a real one that is then removed
    assert make_cleaner(["unescape", "strip_html"])("a &lt;b&gt; c") == "a   c"
    assert make_cleaner(["strip_html", "unescape"])("a &lt;b&gt; c") == "a <b> c"


def test_every_named_step_is_registered():
    assert set(CLEANERS) == {
        "strip_html",
        "unescape",
        "nfkc",
        "remove_control",
        "collapse_whitespace",
        "lower",
        "replace_urls",
        "replace_users",
    }


def test_lemmatize_replaces_words_by_their_dictionary_form_and_keeps_the_rest():
    from bench.cleaning import make_cleaner

    clean = make_cleaner(["replace_users", "lemmatize:en"])
    assert clean("@united The flights were delayed, again!") == "@user the flight be delay, again!"
    assert make_cleaner(["lemmatize:de"])("Die Flüge wurden gestrichen.") == (
        "der Flug werden streichen."
    )


def test_lemmatize_takes_the_language_from_the_recipe(tmp_path):
    import pytest

    from compress.engine.recipe import load_recipe
    from compress.errors import EdgebertError

    def recipe(data: str):
        path = tmp_path / "r.yaml"
        path.write_text(
            f"name: x\ndata:\n  dataset: sst2\n{data}stages:\n  - type: finetune\n"
            "    model: minilm-l6\n"
        )
        return load_recipe(path)

    assert recipe("  clean: [nfkc, lemmatize]\n  language: en\n").data.clean == [
        "nfkc",
        "lemmatize:en",
    ]  # saved with the model (edgebert.json) as it is: predict needs the language too
    with pytest.raises(EdgebertError, match=r"'lemmatize' needs data.language, one of ar, "):
        recipe("  clean: [lemmatize]\n")
    with pytest.raises(EdgebertError, match=r"data.clean\[0\]: Input should be 'strip_html', "):
        recipe("  clean: [lemmatise]\n  language: en\n")
