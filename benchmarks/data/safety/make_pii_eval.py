"""Build ``pii_eval.jsonl``: sentences with labelled PII spans, plus hard negatives.

Run ``python benchmarks/data/safety/make_pii_eval.py`` (deterministic, seed 7). Values are
synthetic but valid where a checksum exists (Luhn, mod-97, RRN check digit); sentence frames
were written for this project. Each line: ``{"text", "spans": [{"type", "start", "end"}]}``.
A tenth of the positives get a unicode trick (full-width digits, zero-width characters).
"""

import json
import random
import string
from pathlib import Path

OUT = Path(__file__).with_name("pii_eval.jsonl")
rng = random.Random(7)

FRAMES = [
    "Please contact me at {} if anything changes.",
    "My details: {}.",
    "You can reach the account owner via {} during office hours",
    "{} is what I have on file, can you update it?",
    "Hi team, use {} for the refund, thanks!",
    "For verification the customer gave {} on the call.",
    "Record updated (value: {}) by the support agent.",
    "note to self - {} - do not share",
    "The form says {} but the system shows something else.",
    "Can you check whether {} is correct?",
]


def luhn_complete(prefix: str, length: int) -> str:
    digits = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    for check in string.digits:
        candidate = digits + check
        total = 0
        for i, ch in enumerate(reversed(candidate)):
            d = int(ch)
            if i % 2:
                d = d * 2 - 9 if d > 4 else d * 2
            total += d
        if total % 10 == 0:
            return candidate
    raise AssertionError


def group(digits: str, sizes: list[int], seps: list[str]) -> str:
    out, i = [], 0
    for size in sizes:
        out.append(digits[i : i + size])
        i += size
    if i < len(digits):
        out.append(digits[i:])
    joined = out[0]
    for part in out[1:]:
        joined += rng.choice(seps) + part
    return joined


def email() -> str:
    user = rng.choice(["john.doe", "k.lee", "maria_garcia", "dev+alerts", "s.park84", "ops-team"])
    domain = rng.choice(["example.com", "mail.example.co.uk", "corp.example.org", "example.kr"])
    return f"{user}{rng.randint(1, 99)}@{domain}"


def phone() -> str:
    n = lambda k: "".join(rng.choice(string.digits) for _ in range(k))  # noqa: E731
    area = rng.choice(["415", "212", "646", "312", "617", "206"])
    return rng.choice([
        f"({area}) {rng.randint(200, 999)}-{n(4)}", f"{area}-{rng.randint(200, 999)}-{n(4)}",
        f"{area}.{rng.randint(200, 999)}.{n(4)}", f"+1 {area} {rng.randint(200, 999)} {n(4)}",
        f"010-{n(4)}-{n(4)}", f"+82 10-{n(4)}-{n(4)}", f"02-{rng.randint(200, 999)}-{n(4)}",
        f"+44 20 7946 {n(4)}", f"+49 30 {rng.randint(200, 999)}{n(4)}", f"+33 1 42 68 {n(2)} {n(2)}",
    ])  # fmt: skip


def card() -> str:
    prefix, length, sizes = rng.choice([
        ("4", 16, [4, 4, 4, 4]), ("51", 16, [4, 4, 4, 4]), ("2221", 16, [4, 4, 4, 4]),
        ("37", 15, [4, 6, 5]), ("6011", 16, [4, 4, 4, 4]), (f"35{rng.randint(28, 89)}", 16, [4, 4, 4, 4]),
    ])  # fmt: skip
    return group(luhn_complete(prefix, length), sizes, rng.choice([[" "], ["-"], [" ", "-"], [""]]))


def iban() -> str:
    country, bban_len = rng.choice([("DE", 18), ("GB", 18), ("FR", 23), ("NL", 14), ("ES", 20)])
    if country == "GB":
        bban = rng.choice(["WEST", "BARC", "NWBK"]) + "".join(rng.choices(string.digits, k=14))
    elif country == "NL":
        bban = rng.choice(["ABNA", "INGB", "RABO"]) + "".join(rng.choices(string.digits, k=10))
    else:
        bban = "".join(rng.choices(string.digits, k=bban_len))
    numeric = "".join(str(int(ch, 36)) for ch in bban + country + "00")
    check = 98 - int(numeric) % 97
    compact = f"{country}{check:02d}{bban}"
    if rng.random() < 0.5:
        return compact
    return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))


def ssn() -> str:
    area = rng.choice([a for a in range(1, 900) if a != 666])
    sep = rng.choice(["-", " "])
    return f"{area:03d}{sep}{rng.randint(1, 99):02d}{sep}{rng.randint(1, 9999):04d}"


def rrn() -> str:
    body = f"{rng.randint(50, 99):02d}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
    body += str(rng.choice([1, 2])) + "".join(rng.choices(string.digits, k=5))
    weights = (2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5)
    check = (11 - sum(int(d) * w for d, w in zip(body, weights, strict=True)) % 11) % 10
    return f"{body[:6]}-{body[6:]}{check}"


def ip() -> str:
    if rng.random() < 0.6:
        return ".".join(str(rng.randint(1, 254)) for _ in range(4))
    groups = [f"{rng.randint(0, 0xFFFF):x}" for _ in range(8)]
    if rng.random() < 0.5:
        return "2001:db8::" + ":".join(groups[:3])
    return ":".join(groups)


def secret() -> str:
    alnum = string.ascii_letters + string.digits
    r = lambda k: "".join(rng.choices(alnum, k=k))  # noqa: E731
    return rng.choice([
        "AKIA" + "".join(rng.choices(string.ascii_uppercase + string.digits, k=16)),
        "ghp_" + r(36), "sk-proj-" + r(40), "xoxb-" + r(12) + "-" + r(24), "AIza" + r(35),
        "sk_live_" + r(24), "glpat-" + r(20),
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0." + r(43),
    ])  # fmt: skip


MAKERS = {
    "EMAIL": email, "PHONE": phone, "CREDIT_CARD": card, "IBAN": iban, "US_SSN": ssn,
    "KR_RRN": rrn, "IP_ADDRESS": ip, "SECRET": secret,
}  # fmt: skip
FULL_WIDTH = str.maketrans("0123456789-", "０１２３４５６７８９－")

NEGATIVES = [
    "Your order 123-456-7890 has shipped.", "Order #4111111111111112 was cancelled.",
    "Invoice 2024-0001-5532 is due on 2024-03-15.", "The meeting is on 15/01/2024 at 12:30:45.",
    "Upgrade to version 1.2.3.4 or build 10.0.19041.1.", "Python 3.11.4 and numpy 1.26.4 are needed.",
    "ISBN 978-3-16-148410-0 is the second edition.", "Trace id 123e4567-e89b-12d3-a456-426614174000.",
    "Commit 3f786850e387550fdab836ed7e6dc881de23001b fixed it.", "Total: $1,234,567.89 incl. tax.",
    "Call the main desk at extension 4417.", "Room 1204, building 7, floor 12.",
    "Tracking number 1Z999AA10123456784.", "Pi is 3.14159265358979 to 15 digits.",
    "The ratio was 0.85 and the p-value 0.0001.", "Use the std::vector<int> overload.",
    "Card ending in 1111 was charged.", "Patient weight 72.5 kg, height 180 cm.",
    "SKU 5500-0000-0000-0001 is out of stock.", "Reference DE89 3704 0044 0532 0130 01 failed.",
    "Serial 666-12-3456 is a test fixture.", "ID 900101-1234567 did not validate.",
    "Coordinates 37.5665, 126.9780 point to Seoul.", "The score was 10-7 at half time.",
    "Ship to 221B Baker Street, London.", "Read chapter 3.2.1 before Monday.",
    "Password policy: at least 12 characters.", "Set api_key in the config file.",
    "The function is named get_user_profile_settings_for_account.", "Phone prefix 555 is fictional.",
]  # fmt: skip


# Hand-written harder cases; [[TYPE|value]] marks a gold span.
HARD = [
    "Mail <[[EMAIL|first.last@sub.example.com]]> or [[EMAIL|FIRST.LAST@EXAMPLE.COM]].",
    "Server [[IP_ADDRESS|10.20.30.40]]:8080 and [[IP_ADDRESS|::ffff:192.0.2.128]] are down.",
    "ssh root@[[IP_ADDRESS|203.0.113.7]] -p 22",
    "Call [[PHONE|1-800-275-2273]] or text [[PHONE|(646) 555-2671]]!",
    "Tel: [[PHONE|+82-2-312-3456]], mobile [[PHONE|010 9876 5432]].",
    "Card: [[CREDIT_CARD|5105-1051-0510-5100]], exp 12/27, cvv 123.",
    "card number:[[CREDIT_CARD|4012888888881881]]",
    "IBAN: [[IBAN|NL91 ABNA 0417 1643 00]] (ABN AMRO).",
    "IBAN=[[IBAN|FR7630006000011234567890189]];",
    "SSN [[US_SSN|219-09-9998]] (not 219-09-9999).",
    "주민등록번호 [[KR_RRN|850315-1234566]] 입니다.",
    "Contact 김민수 at [[PHONE|010-2345-6789]] or [[EMAIL|minsu.kim@example.kr]].",
    "export OPENAI_API_KEY=[[SECRET|sk-Zt8kQ2wX9vB4nM7pL1rT6yU3iO5aS0dF]]",
    "aws_access_key_id = [[SECRET|AKIAJ3K5L7N9P2R4T6V8]]",
    "Authorization: Bearer [[SECRET|eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhYmMxMjMifQ.Xk3p9Lm2Qw8Zr5Tn1Vb7]]",
    "password: [[SECRET|Tr0ub4dor&3x]]",
    "my email is [[EMAIL|ｊａｎｅ＠ｅｘａｍｐｌｅ．ｃｏｍ]] in full width",
    "ping [[IP_ADDRESS|192.168.0.1]], then [[IP_ADDRESS|fe80::1ff:fe23:4567:890a]]",
    "Wire to [[IBAN|GB29 NWBK 6016 1331 9268 19]] today.",
    "Her number is [[PHONE|+1 (212) 555-0147]].",
    "Visa [[CREDIT_CARD|4539 1488 0343 6467]] and Amex [[CREDIT_CARD|3714 496353 98431]]",
    "SSN: [[US_SSN|123-45-6780]]",
    "Git token [[SECRET|github_pat_11ABCDEFG0abcdefghij_KLMNOPQRSTUVWXYZ0123456789abcdefghijklmnop]]",
    "Reach me: [[PHONE|+44 7911 123456]]",
    "dial [[PHONE|415 555 2671]] now",
]
HARD_NEGATIVES = [
    "Call 911 or 112 in an emergency.", "The year 1999 and the year 2024.",
    "Model gpt-4o-2024-08-06 and v1.2.3-rc.4.", "IPv4 has 4294967296 addresses.",
    "Set timeout=30000 and retries=5.", "Lot 2023-11-0042, expiry 2026-06-30.",
    "Error 0x80070005 at 12:00:01.", "Score: 4111 points in 1111 games.",
    "Page 1 of 23, section 4.5.6.7.8.", "Use port 8080 or 443.",
    "Latitude 37.774929 longitude -122.419416.", "My token is in the vault, not here.",
    "The SSN field is empty.", "KRW 1,500,000 was paid on 2024.05.01.",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ is the alphabet.", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
]  # fmt: skip


def marked(text: str) -> dict:
    spans, out, i = [], "", 0
    while (start := text.find("[[", i)) >= 0:
        end = text.index("]]", start)
        kind, value = text[start + 2 : end].split("|", 1)
        out += text[i:start]
        spans.append({"type": kind, "start": len(out), "end": len(out) + len(value)})
        out += value
        i = end + 2
    return {"text": out + text[i:], "spans": spans}


def main() -> None:
    rows = [marked(t) for t in HARD] + [{"text": t, "spans": []} for t in HARD_NEGATIVES]
    for kind, make in MAKERS.items():
        for i in range(40):
            value, frame = make(), rng.choice(FRAMES)
            if i % 10 == 9 and kind not in ("SECRET", "IBAN"):  # unicode tricks
                value = value.translate(FULL_WIDTH) if any(c.isdigit() for c in value) else value
                if kind == "EMAIL":
                    value = value.replace("@", "\u200b@")
            text = frame.format(value)
            start = text.index(value)
            rows.append(
                {"text": text, "spans": [{"type": kind, "start": start, "end": start + len(value)}]}
            )
    for _ in range(60):  # two kinds in one text
        a, b = rng.sample(list(MAKERS), 2)
        va, vb = MAKERS[a](), MAKERS[b]()
        text = f"Name on file: J. Kim, {va}; backup {vb}."
        sa, sb = text.index(va), text.index(vb)
        rows.append({"text": text, "spans": [
            {"type": a, "start": sa, "end": sa + len(va)}, {"type": b, "start": sb, "end": sb + len(vb)},
        ]})  # fmt: skip
    rows += [{"text": t, "spans": []} for t in NEGATIVES]
    rng.shuffle(rows)
    OUT.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"wrote {len(rows)} rows to {OUT}")


if __name__ == "__main__":
    main()
