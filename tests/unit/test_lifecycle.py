"""Deployment and allocation lifecycles: every allowed move, and every other one refused."""

from __future__ import annotations

import itertools

import pytest

from nunet.errors import IllegalTransition
from nunet.jobs.lifecycle import (
    ALLOCATION_FINAL,
    ALLOCATION_TRANSITIONS,
    DEPLOYMENT_FINAL,
    DEPLOYMENT_TRANSITIONS,
    AllocationStatus,
    DeploymentStatus,
    advance_allocation,
    advance_deployment,
)

D = DeploymentStatus
A = AllocationStatus
D_EVENTS = sorted({event for _, event in DEPLOYMENT_TRANSITIONS})
A_EVENTS = sorted({event for _, event in ALLOCATION_TRANSITIONS})


def test_task_deployment_happy_path() -> None:
    state = D.PREPARING
    for event in ("bids_selected", "committed", "started", "completed"):
        state = advance_deployment(state, event)
    assert state is D.COMPLETED


def test_failed_commit_goes_back_to_bidding() -> None:
    state = advance_deployment(D.PREPARING, "bids_selected")
    assert advance_deployment(state, "commit_failed") is D.PREPARING


@pytest.mark.parametrize(("state", "event"), list(itertools.product(D, D_EVENTS)))
def test_deployment_table_is_the_whole_truth(state: DeploymentStatus, event: str) -> None:
    if (state, event) in DEPLOYMENT_TRANSITIONS:
        assert advance_deployment(state, event) is DEPLOYMENT_TRANSITIONS[(state, event)]
    else:
        with pytest.raises(IllegalTransition) as info:
            advance_deployment(state, event)
        assert (info.value.state, info.value.event) == (state.value, event)
        assert f"{event!r} is not allowed in state {state.value!r}" in str(info.value)


@pytest.mark.parametrize(("state", "event"), list(itertools.product(A, A_EVENTS)))
def test_allocation_table_is_the_whole_truth(state: AllocationStatus, event: str) -> None:
    if (state, event) in ALLOCATION_TRANSITIONS:
        assert advance_allocation(state, event) is ALLOCATION_TRANSITIONS[(state, event)]
    else:
        with pytest.raises(IllegalTransition):
            advance_allocation(state, event)


def test_final_states_have_no_way_out() -> None:
    assert not [k for k in DEPLOYMENT_TRANSITIONS if k[0] in DEPLOYMENT_FINAL]
    leaving = [k for k in ALLOCATION_TRANSITIONS if k[0] in ALLOCATION_FINAL]
    assert all(event == "terminate" for _state, event in leaving)
    assert not [k for k in ALLOCATION_TRANSITIONS if k[0] is A.TERMINATED]


def test_every_deployment_state_can_reach_an_end() -> None:
    reach = {s: {t for (f, _e), t in DEPLOYMENT_TRANSITIONS.items() if f is s} for s in D}
    for start in D:
        seen, todo = {start}, [start]
        while todo:
            for nxt in reach[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        assert seen & DEPLOYMENT_FINAL, start
