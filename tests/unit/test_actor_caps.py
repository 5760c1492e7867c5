"""CapabilityProvider: which chain an outgoing envelope carries, and that receivers accept it
(the verifier accepts a self-issued root delegation presented by its issuer)."""

from __future__ import annotations

import pytest
from actor_world import CHILD, NODE_A, NODE_B, ORG, T0, grant

from nunet.actor.caps import RENEW_BEFORE_S, CapabilityProvider
from nunet.errors import UntrustedRoot, WrongAudience
from nunet.ucan import TrustContext, decode_token


def receiver(*roots: str) -> TrustContext:
    return TrustContext(roots, did=NODE_B.did)


def test_self_issued_root_is_accepted_where_we_are_trusted() -> None:
    provider = CapabilityProvider(TrustContext(did=NODE_A.did), NODE_A)
    (token,) = provider.tokens("/public/hello", None, T0)
    tok = decode_token(token)
    assert (tok.action, tok.issuer, tok.audience, tok.capabilities, tok.topics) == (
        "delegate", NODE_A.did, NODE_A.did, ("/",), ("/",))
    link = receiver(NODE_A.did).verify(token, (), T0, capability="/public/hello",
                                        holder=NODE_A.did, receiver=NODE_B.did)
    assert link.token.issuer == NODE_A.did
    receiver(NODE_A.did).verify(token, (), T0, capability="/x", topic="/nunet/t",
                                holder=NODE_A.did)
    with pytest.raises(UntrustedRoot):
        receiver().verify(token, (), T0, capability="/x", holder=NODE_A.did)
    with pytest.raises(WrongAudience):  # not a bearer token
        receiver(NODE_A.did).verify(token, (), T0, capability="/x", holder=NODE_B.did)


def test_self_root_is_cached_then_renewed_before_expiry() -> None:
    provider = CapabilityProvider(TrustContext(did=NODE_A.did), NODE_A, lifetime_s=3600)
    first = provider.tokens("/a", None, T0)
    assert provider.tokens("/b", None, T0 + 10) == first
    later = T0 + 3600 - RENEW_BEFORE_S + 1
    renewed = provider.tokens("/a", None, later)
    assert renewed != first
    assert decode_token(renewed[0]).expiry == int(later) + 3600


def test_a_covering_provide_anchor_is_preferred() -> None:
    trust = TrustContext(did=NODE_A.did)
    deployment = grant(ORG, NODE_A, T0, caps=("/dms/deployment",), topics=("/nunet",))
    trust.add_provide(deployment, (), T0)
    provider = CapabilityProvider(trust, NODE_A)
    assert provider.tokens("/dms/deployment/bid", None, T0) == (deployment,)
    assert provider.tokens("/dms/deployment/bid", "/nunet/deployment", T0) == (deployment,)
    own = provider.tokens("/public/hello", None, T0)  # not covered: our own root
    assert decode_token(own[0]).issuer == NODE_A.did
    receiver(ORG.did).verify(deployment, (), T0, capability="/dms/deployment/bid",
                             holder=NODE_A.did)
    # A newer, longer anchor is picked up after refresh().
    longer = grant(ORG, NODE_A, T0, caps=("/dms",), exp=int(T0) + 7200)
    trust.add_provide(longer, (), T0)
    assert provider.tokens("/dms/deployment/bid", None, T0) == (deployment,)
    provider.refresh()
    assert provider.tokens("/dms/deployment/bid", None, T0) == (longer,)


def test_a_child_extends_its_parents_chain() -> None:
    trust = TrustContext(did=NODE_A.did)
    parent = CapabilityProvider(trust, NODE_A)
    child = CapabilityProvider(trust, CHILD, parent=parent)
    chain = child.tokens("/dms/allocation/status", None, T0)
    assert len(chain) == 2
    assert chain[1] == parent.tokens("/dms/allocation/status", None, T0)[0]
    leaf = decode_token(chain[0])
    assert (leaf.issuer, leaf.audience) == (NODE_A.did, CHILD.did)
    link = receiver(NODE_A.did).verify(chain[0], chain[1:], T0,
                                       capability="/dms/allocation/status", holder=CHILD.did)
    assert link.root.token.issuer == NODE_A.did
    # Under a provide anchor of the parent's, the child's chain roots at the org.
    trust.add_provide(grant(ORG, NODE_A, T0, caps=("/dms",)), (), T0)
    parent.refresh()
    child.refresh()
    chain = child.tokens("/dms/allocation/status", None, T0)
    assert len(chain) == 2
    receiver(ORG.did).verify(chain[0], chain[1:], T0, capability="/dms/allocation/status",
                             holder=CHILD.did)
