import math

import pytest

from llmloop.evals.metrics import (
    bleu,
    bootstrap_ci,
    chrf,
    contains,
    exact_match,
    is_refusal,
    multiple_choice_scores,
    perplexities,
    regex_match,
    rouge_l,
    token_f1,
)


def test_exact_match_normalises_case_punctuation_and_articles():
    assert exact_match("The Paris!", "paris") == 1.0
    assert exact_match("Paris, France", "Paris") == 0.0


def test_token_f1_by_hand():
    # normalised: "big red dog" vs "red dog barked": 2 common of 3 and 3 -> P = R = 2/3
    assert token_f1("the big red dog", "a red dog barked") == pytest.approx(2 / 3)
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0


def test_rouge_l_by_hand():
    # LCS of [the cat sat on the mat] and [the cat is on the mat] is 5 of 6 tokens each
    assert rouge_l("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)


def test_bleu_and_chrf_bounds():
    sentence = "the quick brown fox jumps over the lazy dog"
    assert bleu(sentence, sentence) == pytest.approx(1.0)
    assert chrf(sentence, sentence) == pytest.approx(1.0)
    assert bleu("alpha beta gamma delta", sentence) == 0.0
    assert 0.0 < chrf("the quick brown cat", sentence) < 1.0


def test_contains_matches_whole_words_only():
    assert contains("I think it is Paris.", "paris") == 1.0
    assert contains("Parisian food", "Paris") == 0.0


def test_regex_with_and_without_capture_group():
    assert regex_match("The answer is 42.", r"answer is (\d+)", "42") == 1.0
    assert regex_match("The answer is 41.", r"answer is (\d+)", "42") == 0.0
    assert regex_match("Yes.", r"^(?i:yes)\b") == 1.0
    assert regex_match("No.", r"^(?i:yes)\b") == 0.0


def test_multiple_choice_acc_and_acc_norm_by_hand():
    # acc picks -2.0 (choice 0); per character: -2/2 = -1 vs -3/6 = -0.5 -> choice 1
    assert multiple_choice_scores([-2.0, -3.0], ["ab", "abcdef"], 1) == {
        "acc": 0.0,
        "acc_norm": 1.0,
    }


def test_perplexities_by_hand():
    result = perplexities(-6.0, num_tokens=3, num_words=2, num_bytes=4)
    assert result["token_perplexity"] == pytest.approx(math.exp(2))
    assert result["word_perplexity"] == pytest.approx(math.exp(3))
    assert result["bits_per_byte"] == pytest.approx(6 / (4 * math.log(2)))


def test_refusal_by_filter_or_wording():
    assert is_refusal("I'm sorry, but I can't help with that.", "stop")
    assert is_refusal("Sure, here is", "content_filter")
    assert not is_refusal("Paris is the capital of France.", "stop")


def test_bootstrap_ci_of_a_constant_is_that_constant():
    low, high = bootstrap_ci(lambda idx: 0.5, num_samples=10, num_resamples=50)
    assert low == high == 0.5
