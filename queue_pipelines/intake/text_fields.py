"""The intake's text fields, and the one check of a mail address and a display name.

A name or anything else meant as one line may hold no control character: a CR or LF in a
buyer's name breaks the mail header it goes into (after the card was charged), and NUL, ESC
and their kind have no business in names, ids or on-chain strings. Multi-line text (a
description, metadata values) may hold TAB, LF and CR and nothing else of that kind. Lone
surrogates (what JSON's "\\ud800" escapes decode to) are refused everywhere: they are not
text and cannot be written out as UTF-8.

Mail addresses are delivered, not merely checked: `mail_address` gives the form that goes
into the header and the SMTP envelope, ASCII with an internationalized domain in its IDNA
(xn--) form. An address whose part before the @ is not ASCII is refused, since delivering it
needs SMTPUTF8, which not every mail server offers. notifications/delivery.build_email calls
`mail_address` and `display_name` on what it is given, so a value the intake accepted can
never make the mail fail to build.

Imports nothing from Dagster (part of the wire format).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Annotated, Any

import email_validator
from pydantic import AfterValidator, Field

# RFC 5321: a path of at most 256 octets, including the angle brackets.
MAX_MAIL_ADDRESS = 254

_NAMES = {
    0x00: "NUL",
    0x09: "tab",
    0x0A: "line feed",
    0x0D: "carriage return",
    0x1B: "escape",
    0x7F: "DEL",
    0x85: "next line",
    0x2028: "line separator",
    0x2029: "paragraph separator",
}
# Category Cc is C0, DEL and C1; Cs are the surrogates.
_SINGLE_LINE_REFUSED = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_MULTI_LINE_REFUSED = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
# The same rules for producers that check against the JSON Schema (which has no surrogates).
SINGLE_LINE_PATTERN = r"^[^\u0000-\u001F\u007F-\u009F\u2028\u2029]*$"
MULTI_LINE_PATTERN = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"


def describe_character(char: str) -> str:
    """'U+000A (line feed)': a character named so that printing the name is harmless."""
    code = ord(char)
    if 0xD800 <= code <= 0xDFFF:
        name = "lone surrogate"
    else:
        name = _NAMES.get(code) or unicodedata.name(char, "control character")
    return f"U+{code:04X} ({name})"


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(found: re.Match[str]) -> str:
    char = found.group()
    code = ord(char)
    return _ESCAPES.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def escape_controls(text: str) -> str:
    """`text` fit for a terminal: every character a single-line field refuses (ESC of a
    terminal escape sequence, CR, NUL, C1 controls, lone surrogates from undecodable bytes)
    written as a backslash escape, `\\x1b`, `\\n`, `\\udcff`."""
    return _SINGLE_LINE_REFUSED.sub(_escape, text)


def _refuse(value: str, refused: re.Pattern[str], rule: str) -> str:
    found = refused.search(value)
    if found is not None:
        raise ValueError(
            f"holds {describe_character(found.group())} at position {found.start()}: {rule}"
        )
    return value


def single_line(value: str) -> str:
    """`value` if it is one line of text: no C0 or C1 control character (CR, LF, TAB and NUL
    included), no DEL, no line or paragraph separator, no lone surrogate."""
    return _refuse(
        value,
        _SINGLE_LINE_REFUSED,
        "one line of text takes no control characters or line breaks",
    )


def multi_line(value: str) -> str:
    """`value` if it is text: TAB, LF and CR allowed, other control characters not."""
    return _refuse(
        value,
        _MULTI_LINE_REFUSED,
        "text takes no control characters other than tab, line feed and carriage return",
    )


def display_name(value: str | None) -> str | None:
    """A person's name as it goes into a mail header (`To: name <address>`): one line."""
    return None if value is None else single_line(value)


def mail_address(value: str, *, globally_deliverable: bool = True) -> str:
    """`value` as it goes into a mail header and the SMTP envelope: the mailbox name as
    given, the domain lower case and, when internationalized, in its IDNA (xn--) form. The
    result checks to itself. ValueError says why an address cannot be delivered.

    `globally_deliverable=False` also lets through a domain without a dot (ops@mailhost),
    for the operators' own address; an address from the intake must be on the Internet."""
    single_line(value)
    return _checked_address(value, globally_deliverable)


# Buyers come back: a tick over a thousand payments meets the same addresses again, and
# email_validator takes ~20 us an address. The check is a pure function of its arguments; a
# refusal raises, which lru_cache does not keep, so it is checked (and worded) anew each time.
@functools.lru_cache(maxsize=4096)
def _checked_address(value: str, globally_deliverable: bool) -> str:
    try:
        checked = email_validator.validate_email(
            value,
            check_deliverability=False,
            allow_smtputf8=True,
            globally_deliverable=globally_deliverable,
        )
    except email_validator.EmailNotValidError as exc:
        raise ValueError(f"not a deliverable e-mail address: {exc}") from None
    if not checked.local_part.isascii():
        raise ValueError(
            "the part before the @ must be ASCII: an internationalized mailbox name needs "
            "SMTPUTF8, which not every mail server offers (an internationalized domain is "
            "accepted)"
        )
    address = f"{checked.local_part}@{checked.ascii_domain}"
    if len(address) > MAX_MAIL_ADDRESS:
        raise ValueError(
            f"the address is {len(address)} characters with its domain in IDNA form, "
            f"over the {MAX_MAIL_ADDRESS} a mail server takes"
        )
    return address


class _JsonPattern:
    """Puts the rule into the generated JSON Schema as a `pattern`, for producers that
    validate against it; pydantic itself checks with the validator, whose refusal says which
    character, where."""

    def __init__(self, pattern: str):
        self.pattern = pattern

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Any) -> dict[str, Any]:
        schema = handler(core_schema)
        schema.setdefault("pattern", self.pattern)
        return schema


SingleLineText = Annotated[str, AfterValidator(single_line), _JsonPattern(SINGLE_LINE_PATTERN)]
MultiLineText = Annotated[str, AfterValidator(multi_line), _JsonPattern(MULTI_LINE_PATTERN)]


def single_line_text(max_length: int) -> Any:
    """SingleLineText of at most `max_length` characters, for a field that may be null: on
    `SingleLineText | None` a length limit is checked only after the validator, and its
    refusal reads "at most N items"."""
    return Annotated[
        str,
        Field(max_length=max_length),
        AfterValidator(single_line),
        _JsonPattern(SINGLE_LINE_PATTERN),
    ]


def multi_line_text(max_length: int) -> Any:
    """MultiLineText of at most `max_length` characters, for a field that may be null."""
    return Annotated[
        str,
        Field(max_length=max_length),
        AfterValidator(multi_line),
        _JsonPattern(MULTI_LINE_PATTERN),
    ]


def text_metadata(max_items: int) -> Any:
    """A producer's notes: at most `max_items` keys, each one line, each value text. (The key
    rule goes into the JSON Schema as `propertyNames`: a key type with a pattern would make
    pydantic write `patternProperties`, which lets any other key through.)"""
    return Annotated[
        dict[Annotated[str, AfterValidator(single_line)], MultiLineText],
        Field(
            max_length=max_items,
            json_schema_extra={"propertyNames": {"pattern": SINGLE_LINE_PATTERN}},
        ),
    ]


MailAddress = Annotated[
    str,
    AfterValidator(mail_address),
    Field(
        json_schema_extra={"format": "email"},
        description="ASCII before the @; an internationalized domain is accepted and kept in "
        "its IDNA (xn--) form.",
    ),
]
