"""Korean addresses and names, as far as patterns and a validator can tell.

``KR_ADDRESS``: a road-name address (도로명주소, ``서울특별시 강남구 테헤란로 152``) or a lot-number
address (지번주소, ``부산 해운대구 우동 1408-5``), with the unit and room that may follow
(``101동 1202호``). Validated by its shape: a province or metropolitan city from the official
list of 17 (full or short name), then districts ending in 시/군/구, then a road ending in 로/길
or a neighbourhood ending in 동/리/가, then a building or lot number that does not count
something (``3시``, ``5명``). Without the province a district ending in 구/군 must come first and
a road (not a neighbourhood) follow (``강남구 테헤란로 152``, score 0.7). A road or neighbourhood
and a number alone (``테헤란로 152``) are not reported: too many shop names and codes look so.

``KR_NAME``: a surname from the list of the common ones (one syllable, or two such as 남궁)
and a given name of one or two syllables, only where the context says it is a name: after a
label (``이름:``, ``성명``, ``예금주``, ...), before an honorific or title (``님``, ``씨``, ``과장님``),
or in ``저는 ...입니다``. Without such context a name is not told apart from a word (김치,
이번, 정말 all start with a surname), so it is not reported. A handful of words that take titles
(우리, 저희, ...) are never names.

Every pattern is linear: each starts only at the start of a Hangul run (a lookbehind) and
every repetition is bounded.
"""

import re
from collections.abc import Iterator

SIDO = (
    "서울특별시|서울시|서울|부산광역시|부산시|부산|대구광역시|대구시|대구|인천광역시|인천시|인천"
    "|광주광역시|광주시|광주|대전광역시|대전시|대전|울산광역시|울산시|울산|세종특별자치시|세종시|세종"
    "|경기도|경기|강원특별자치도|강원도|강원|충청북도|충북|충청남도|충남|전북특별자치도|전라북도|전북"
    "|전라남도|전남|경상북도|경북|경상남도|경남|제주특별자치도|제주도|제주"
)
"""The 17 first-level divisions (2024 names and the older ones still written), short forms too."""
_DISTRICT = r"[가-힣]{1,8}(?:시|군|구)"
_TOWN = r"[가-힣0-9]{1,8}(?:읍|면)"
_ROAD = r"[가-힣0-9]{1,15}(?:로|길)"
_DONG = r"[가-힣0-9]{1,8}(?:동|리|가)"
_NUMBER = r"(?:산\s?)?\d{1,5}(?:-\d{1,5})?(?:번지|번길)?"
_DETAIL = r"(?:,?\s?\d{1,4}동)?(?:,?\s?\d{1,5}호)?(?:\s?\([가-힣0-9,.\s]{1,30}\))?"
# a number that counts something (3시, 5명, 2층) is no building number
_NOT_COUNTER = (
    r"(?!\d|\s?(?:시|분|명|개|층|살|년|월|일|초|원|배|회|등|위|점|권|장|대|번째|마리|km\b|m\b))"
)
_NUMBER_END = rf"{_NUMBER}{_NOT_COUNTER}{_DETAIL}"
KR_ADDRESS = re.compile(
    rf"(?<![가-힣])(?:{SIDO})\s(?:{_DISTRICT}\s){{0,2}}(?:{_TOWN}\s)?(?:{_ROAD}|{_DONG})\s?{_NUMBER_END}"
)
KR_ADDRESS_WITHOUT_PROVINCE = re.compile(  # a road only: 동/리/가 end too many words (아이가 3)
    rf"(?<![가-힣])([가-힣]{{1,8}}(?:구|군))\s(?:{_DISTRICT}\s)?(?:{_TOWN}\s)?{_ROAD}\s?{_NUMBER_END}"
)
NOT_DISTRICTS = frozenset(
    [
        "친구",
        "가구",
        "도구",
        "연구",
        "요구",
        "입구",
        "출구",
        "야구",
        "탐구",
        "추구",
        "항구",
        "농구",
        "인구",
        "축구",
        "배구",
        "기구",
        "창구",
        "장구",
        "완구",
        "문구",
        "용구",
        "공구",
        "욕구",
        "영구",
        "장군",
        "아군",
        "적군",
        "대군",
        "국군",
        "미군",
        "해군",
        "공군",
        "육군",
    ]
)
"""Words that end like a district (구/군) but are not one: a province-less address starts with a
district, and these would make ``친구 학교로 3`` one."""

SURNAMES = frozenset(
    [
        "김",
        "이",
        "박",
        "최",
        "정",
        "강",
        "조",
        "윤",
        "장",
        "임",
        "한",
        "오",
        "서",
        "신",
        "권",
        "황",
        "안",
        "송",
        "류",
        "유",
        "홍",
        "전",
        "고",
        "문",
        "양",
        "손",
        "배",
        "백",
        "허",
        "남",
        "심",
        "노",
        "하",
        "곽",
        "성",
        "차",
        "주",
        "우",
        "구",
        "민",
        "진",
        "나",
        "지",
        "엄",
        "채",
        "원",
        "천",
        "방",
        "공",
        "현",
        "함",
        "변",
        "염",
        "여",
        "추",
        "도",
        "소",
        "석",
        "선",
        "설",
        "마",
        "길",
        "연",
        "위",
        "표",
        "명",
        "기",
        "반",
        "왕",
        "금",
        "옥",
        "육",
        "인",
        "맹",
        "제",
        "모",
        "탁",
        "국",
        "어",
        "은",
        "편",
        "용",
        "예",
        "경",
        "봉",
        "사",
        "부",
        "가",
        "복",
        "태",
        "목",
        "형",
        "피",
        "두",
        "감",
        "음",
        "빈",
        "동",
        "온",
        "호",
        "범",
        "좌",
        "팽",
        "승",
        "간",
        "상",
        "갈",
        "단",
        "견",
        "당",
        "화",
        "창",
        "옹",
        "순",
        "빙",
        "종",
        "남궁",
        "황보",
        "제갈",
        "선우",
        "독고",
        "사공",
        "서문",
        "동방",
        "어금",
        "망절",
    ]
)
"""Surnames held by about 99.9% of Koreans (Statistics Korea, 2015 census), one or two syllables."""
NOT_NAMES = frozenset(
    [
        "우리",
        "저희",
        "여러",
        "모두",
        "이분",
        "그분",
        "저분",
        "이번",
        "다른",
        "어느",
        "무슨",
        "한국",
        "전체",
        "각각",
        "본인",
        "상대",
        "고객",
        "회원",
        "담당",
        "사장",
        "부장",
        "과장",
        "대리",
        "선생",
        "교수",
        "주인",
        "손님",
        "기사",
        "형님",
        "누님",
        "언니",
        "오빠",
        "동생",
        "여러분",
        "아무",
    ]
)
_HANGUL_NAME = r"[가-힣]{2,4}"
_LABEL = r"(?:이름|성명|성함|고객명|환자명|예금주|수취인|수신인|담당자|받는\s?사람|보내는\s?사람)"
_TITLE = (
    r"(?:님|씨|선생님|고객님|과장님?|대리님?|부장님?|차장님?|팀장님?|실장님?|사장님?|교수님?"
    r"|변호사님?|원장님?|기자님?|학생)"
)
# what may follow a title: a particle (김민수 과장님께), or no Hangul (김민 씨앗 is no name)
_PARTICLE_OR_END = r"(?:(?![가-힣])|(?=께|에게|한테|이|가|은|는|을|를|과|와|도|의|랑))"
KR_NAME_CONTEXTS = (
    re.compile(rf"(?<![가-힣]){_LABEL}\s?[:은는이]?\s?({_HANGUL_NAME})(?![가-힣])"),
    re.compile(
        rf"(?<![가-힣]){_LABEL}\s?[:은는이]?\s?({_HANGUL_NAME})(?=이고|이며|입니다|이에요|예요|이다|,)"
    ),
    re.compile(rf"(?<![가-힣])({_HANGUL_NAME})\s?{_TITLE}{_PARTICLE_OR_END}"),
    re.compile(rf"(?<![가-힣])저는\s({_HANGUL_NAME})(?=입니다|이에요|예요|이라고|라고)"),
)
_HAS_HANGUL = re.compile(r"[가-힣]")
# The unfinished start of an address or a labelled name at the end of a streamed text: held
# back until it is complete (safety.guard), as a run of digits is held for a card number.
# Possessive: words are separated by spaces and each is taken whole, so an attempt that fails
# at the end gives up at once instead of trying every way to split the words (quadratic).
PENDING = re.compile(
    rf"(?<![가-힣])(?:{SIDO}|{_DISTRICT}|{_LABEL})[가-힣:]{{0,2}}+"
    rf"(?:\s++[가-힣0-9,():-]{{1,15}}+){{0,6}}+\s*+$"
)
PENDING_CHARS = 128  # the most text a pending address or name is held for


def kr_address_spans(text: str) -> Iterator[tuple[int, int, float]]:
    """``(start, end, score)`` of every Korean address in ``text`` (normalized)."""
    if not _HAS_HANGUL.search(text):
        return
    for m in KR_ADDRESS.finditer(text):
        yield m.start(), m.end(), 0.85
    for m in KR_ADDRESS_WITHOUT_PROVINCE.finditer(text):
        if m.group(1) not in NOT_DISTRICTS:
            yield m.start(), m.end(), 0.7


def kr_name_spans(text: str) -> Iterator[tuple[int, int, float]]:
    """``(start, end, score)`` of every Korean name that its context marks as one."""
    if not _HAS_HANGUL.search(text):
        return
    for pattern in KR_NAME_CONTEXTS:
        for m in pattern.finditer(text):
            if is_kr_name(m.group(1)):
                yield m.start(1), m.end(1), 0.6


def is_kr_name(word: str) -> bool:
    """A surname from ``SURNAMES`` and a one- or two-syllable given name; not a title word."""
    if word in NOT_NAMES or not 2 <= len(word) <= 4:
        return False
    for surname_length in (2, 1):
        given = len(word) - surname_length
        if word[:surname_length] in SURNAMES and 1 <= given <= 2:
            return True
    return False


def pending_start(held: str) -> int | None:
    """Where an address or labelled name still being written starts in the last
    ``PENDING_CHARS`` of ``held`` (an offset into ``held``), or None."""
    tail_start = max(0, len(held) - PENDING_CHARS)
    m = PENDING.search(held, tail_start)
    return m.start() if m else None
