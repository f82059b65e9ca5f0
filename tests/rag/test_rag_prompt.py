from llmloop.rag.prompt import augment_messages
from llmloop.rag.retrieve import Hit


def hit(number: int, words: int = 10) -> Hit:
    text = " ".join(f"fact{number}" for _ in range(words))
    return Hit(f"/docs/{number}.md", f"c{number}", 1.0 / number, text, f"Doc {number}")


def count_words(text: str) -> int:
    return len(text.split())


def test_sources_are_numbered_in_a_new_system_message() -> None:
    messages = [{"role": "user", "content": "What is fact1?"}]
    augmented, used = augment_messages(messages, [hit(1), hit(2)], count_words, 1000)
    assert used == [hit(1), hit(2)]
    assert augmented[0]["role"] == "system"
    assert "[1] /docs/1.md (Doc 1)\nfact1" in augmented[0]["content"]
    assert "[2] /docs/2.md" in augmented[0]["content"]
    assert augmented[1:] == messages


def test_merged_into_an_existing_system_message_without_mutating_input() -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "q"}]
    augmented, _ = augment_messages(messages, [hit(1)], count_words, 1000)
    assert len(augmented) == 2
    assert augmented[0]["content"].startswith("Be brief.\n\n")
    assert messages[0]["content"] == "Be brief."


def test_only_hits_that_fit_the_budget_are_used_and_renumbered() -> None:
    hits = [hit(1, words=10), hit(2, words=500), hit(3, words=10)]
    augmented, used = augment_messages([{"role": "user", "content": "q"}], hits, count_words, 80)
    assert [h.chunk_id for h in used] == ["c1", "c3"]
    assert "[2] /docs/3.md" in augmented[0]["content"]
    assert "fact2" not in augmented[0]["content"]


def test_nothing_fits_leaves_messages_alone() -> None:
    messages = [{"role": "user", "content": "q"}]
    augmented, used = augment_messages(messages, [hit(1)], count_words, 5)
    assert augmented == messages and used == []
