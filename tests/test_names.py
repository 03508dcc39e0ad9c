"""When two names can be one person's (analysis/names.py), on the shapes real mail has."""

from __future__ import annotations

import pytest

from analysis.names import PersonName, compatible, name_from_address, org_domain, parse_name


@pytest.mark.parametrize(("text", "expected"), [
    ("Allen, Phillip K.", PersonName("phillip", ("k",), "allen")),
    ("Phillip K Allen", PersonName("phillip", ("k",), "allen")),
    ("phillip allen", PersonName("phillip", (), "allen")),
    ("Miller, Don (Asset Mktg)", PersonName("don", (), "miller")),
    ('"Robert W. Huntley, CFP"', None),  # a title after the comma: read as no name at all
    ("Baughman Jr., Don", PersonName("don", (), "baughman")),
    ("Customer Support", None),
    ("Energy Insight Editor", None),
    ("J Smith", None),  # an initial cannot tell people apart
    ("Mike", None),
    ("jsmith@austintx.com", None),
    ("Mark Whitt/DEN/ECT", None),
])
def test_parse_name(text: str, expected: PersonName | None) -> None:
    assert parse_name(text) == expected


@pytest.mark.parametrize(("address", "expected"), [
    ("brenda.h.fletcher@enron.com", PersonName("brenda", ("h",), "fletcher")),
    ("mike.grigsby@enron.com", PersonName("mike", (), "grigsby")),
    ("jsmith@austintx.com", None),
    ("k..allen@enron.com", None),
    ("pallen70@hotmail.com", None),
    ("critical.notice@enron.com", PersonName("critical", (), "notice")),  # automated elsewhere
])
def test_name_from_address(address: str, expected: PersonName | None) -> None:
    assert name_from_address(address) == expected


@pytest.mark.parametrize(("a", "b", "same"), [
    ("Allen, Phillip K.", "phillip allen", True),
    ("Jane M Tholt", "Tholt, Jane Marie", True),
    ("Randall L Gay", "Randall M Gay", False),  # middle initials contradict
    ("Jeff Smith", "Matt Smith", False),  # one family name, two people
    ("Steven Matthews", "Stephen Matthews", False),
    ("Ana Haddad", "Aiko Haddad", False),
])
def test_compatible(a: str, b: str, same: bool) -> None:
    x, y = parse_name(a), parse_name(b)
    assert x is not None and y is not None
    assert compatible(x, y) is same
    assert compatible(y, x) is same


@pytest.mark.parametrize(("address", "org"), [
    ("pallen@ect.enron.com", "enron.com"),
    ("pallen@enron.com", "enron.com"),
    ("someone@mail.example.co.uk", "example.co.uk"),
    ("pallen70@hotmail.com", None),
    ("cbpres@austin.rr.com", None),  # an ISP's customers are not one organisation
])
def test_org_domain(address: str, org: str | None) -> None:
    assert org_domain(address) == org
