"""Third review: a token's ``exp`` and ``nbf`` must be numbers the clock can pass.

PyJWT reads a token's claims with Python's ``json``, which takes ``NaN`` and
``Infinity``. The guard checks ``exp`` and ``nbf`` itself (on one clock, cached
or not) by comparing them with the time, and every comparison with NaN is
false: a token whose ``exp`` is NaN never expired, and one whose ``nbf`` is NaN
was valid at once. Such a token is refused as not a token: a NumericDate is a
finite JSON number (RFC 7519, section 2), so no issuer makes one on purpose.
"""

from __future__ import annotations

import pytest
from tokenkit import Keys, claims, forge

from middleware.identity import Authenticator, IdentityError


@pytest.mark.parametrize(("claim", "value"), [
    ("exp", float("nan")), ("exp", float("inf")), ("nbf", float("nan")), ("nbf", float("-inf")),
])
def test_a_token_whose_exp_or_nbf_is_not_finite_is_refused(
    keys: Keys, claim: str, value: float
) -> None:
    auth = Authenticator.from_settings(keys.identity(leeway_seconds=0))
    token = forge({"alg": "HS256", "typ": "JWT"}, claims(**{claim: value}), keys.hs_secret)
    with pytest.raises(IdentityError):
        auth.verify(token)
    assert auth.cached == 0


def test_the_same_token_with_finite_claims_is_accepted(keys: Keys) -> None:
    auth = Authenticator.from_settings(keys.identity(leeway_seconds=0))
    token = forge({"alg": "HS256", "typ": "JWT"}, claims(), keys.hs_secret)
    assert auth.verify(token).id == "svc:crm"
