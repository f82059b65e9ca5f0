"""Korean addresses and names: found in context, look-alikes left alone, streams hold them whole."""

import pytest

from llmloop.safety.guard import Guard
from llmloop.safety.korean import is_kr_name, pending_start
from llmloop.safety.pii import detect
from llmloop.safety.policy import load_policy
from tests.safety.fakes import fake_classifier


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("주소: 서울특별시 강남구 테헤란로 152", ("KR_ADDRESS", "서울특별시 강남구 테헤란로 152")),
        (
            "경기도 성남시 분당구 판교역로 235, 101동 1202호로 보내주세요",
            ("KR_ADDRESS", "경기도 성남시 분당구 판교역로 235, 101동 1202호"),
        ),
        ("부산 해운대구 우동 1408-5번지", ("KR_ADDRESS", "부산 해운대구 우동 1408-5번지")),
        (
            "서울 종로구 세종대로23길 47 (세종로)",
            ("KR_ADDRESS", "서울 종로구 세종대로23길 47 (세종로)"),
        ),
        ("강남구 테헤란로 152에 있어요", ("KR_ADDRESS", "강남구 테헤란로 152")),
        ("이름: 김민수", ("KR_NAME", "김민수")),
        ("예금주는 남궁민이고 계좌는", ("KR_NAME", "남궁민")),
        ("김민수 과장님께 전달", ("KR_NAME", "김민수")),
        ("저는 이영희입니다", ("KR_NAME", "이영희")),
        ("받는 사람 홍길동", ("KR_NAME", "홍길동")),
    ],
)
def test_found(text: str, expected: tuple[str, str]) -> None:
    assert expected in [(f.type, f.text) for f in detect(text)]


@pytest.mark.parametrize(
    "text",
    [
        "친구 학교로 3시에 가",  # a particle 로 and a time
        "내 친구 아이가 3명 있어",  # 가 is a particle, 3명 counts people
        "서울 강남구에 있는 식당",  # no number
        "세종대로 23길 47",  # no district: a road and a number alone are not reported
        "우리 과장님이 좋아",  # 우리 is no name
        "김치 주세요",  # no name context
        "김민 씨앗을 심었다",  # 씨 starts a word
        "이번 주 김 대리님",  # a surname alone
        "Send it to 152 Main Street",
    ],
)
def test_look_alikes_pass(text: str) -> None:
    assert not [f for f in detect(text) if f.type.startswith("KR_")], text


def test_names_need_a_listed_surname_and_a_short_given_name() -> None:
    assert is_kr_name("김민수") and is_kr_name("남궁민") and is_kr_name("이준")
    assert not is_kr_name("우리") and not is_kr_name("팍민수") and not is_kr_name("김")
    assert not is_kr_name("김가나다라")


def test_a_stream_holds_an_address_until_it_is_whole() -> None:
    guard = Guard(load_policy(None), classifier=fake_classifier())
    text = "배송지는 서울특별시 강남구 테헤란로 152, 101동 1202호이고 받는 사람은 김민수 님입니다. "
    for size in (1, 2, 5):
        stream = guard.stream("output")
        sent = [stream.feed(text[i : i + size]) for i in range(0, len(text), size)]
        sent.append(stream.finish())
        assert "".join(sent) == guard.check(text, "output").text
        assert "테헤란로" not in "".join(sent) and "김민수" not in "".join(sent)
    assert pending_start("배송지는 서울특별시 강남구 ") == len("배송지는 ")
    assert pending_start("plain English text ") is None
