"""Deployment and allocation lifecycles: DMS's status names, each machine one transition table.

Everything that changes a status goes through `advance`, so an illegal move (a late "started"
for a deployment being shut down, a "completed" for an allocation that never ran) is an
`IllegalTransition` naming state and event instead of a silently corrupted record. The tables
are data: the orchestrator, the allocation actor, `nunet get deployments` and the tests read
the same ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from nunet.errors import IllegalTransition


class DeploymentStatus(StrEnum):
    PREPARING = "Preparing"  # asking for bids; waits (queues) while no provider fits
    COMMITTING = "Committing"  # two-phase commit with the chosen providers
    PROVISIONING = "Provisioning"  # allocations created and starting
    RUNNING = "Running"
    SHUTTING_DOWN = "ShuttingDown"
    COMPLETED = "Completed"
    FAILED = "Failed"


class AllocationStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    STOPPED = "stopped"  # stopped on request (shutdown)
    FAILED = "failed"  # exited non-zero, OOM, disk limit, failed health check
    COMPLETED = "completed"  # a task that exited 0
    TERMINATED = "terminated"  # lost with its provider or cleaned up by reconciliation


D = DeploymentStatus
A = AllocationStatus

DEPLOYMENT_TRANSITIONS: Mapping[tuple[DeploymentStatus, str], DeploymentStatus] = {
    (D.PREPARING, "bids_selected"): D.COMMITTING,
    (D.PREPARING, "timeout"): D.FAILED,
    (D.PREPARING, "shutdown"): D.SHUTTING_DOWN,
    (D.PREPARING, "failed"): D.FAILED,  # while a node is placed again, another one failed
    (D.COMMITTING, "committed"): D.PROVISIONING,
    (D.COMMITTING, "commit_failed"): D.PREPARING,  # revert, then try other bids
    (D.COMMITTING, "timeout"): D.FAILED,
    (D.COMMITTING, "shutdown"): D.SHUTTING_DOWN,
    (D.COMMITTING, "failed"): D.FAILED,
    (D.PROVISIONING, "started"): D.RUNNING,
    (D.PROVISIONING, "completed"): D.COMPLETED,  # tasks that finished before we heard "started"
    (D.PROVISIONING, "failed"): D.FAILED,
    (D.PROVISIONING, "redeploy"): D.PREPARING,
    (D.PROVISIONING, "timeout"): D.FAILED,
    (D.PROVISIONING, "shutdown"): D.SHUTTING_DOWN,
    (D.RUNNING, "completed"): D.COMPLETED,
    (D.RUNNING, "failed"): D.FAILED,
    (D.RUNNING, "redeploy"): D.PREPARING,  # an allocation was lost and its policy moves it
    (D.RUNNING, "shutdown"): D.SHUTTING_DOWN,
    (D.SHUTTING_DOWN, "stopped"): D.COMPLETED,
    (D.SHUTTING_DOWN, "failed"): D.FAILED,
}

ALLOCATION_TRANSITIONS: Mapping[tuple[AllocationStatus, str], AllocationStatus] = {
    (A.PENDING, "start"): A.RUNNING,
    (A.PENDING, "stop"): A.STOPPED,
    (A.PENDING, "fail"): A.FAILED,  # could not start: missing image, limits refused
    (A.PENDING, "terminate"): A.TERMINATED,
    (A.RUNNING, "exit_ok"): A.COMPLETED,
    (A.RUNNING, "fail"): A.FAILED,
    (A.RUNNING, "stop"): A.STOPPED,
    (A.RUNNING, "terminate"): A.TERMINATED,
    (A.FAILED, "restart"): A.PENDING,  # failure_recovery: restart
    (A.STOPPED, "restart"): A.PENDING,
    (A.FAILED, "terminate"): A.TERMINATED,
    (A.STOPPED, "terminate"): A.TERMINATED,
    (A.COMPLETED, "terminate"): A.TERMINATED,
}

DEPLOYMENT_FINAL = frozenset({D.COMPLETED, D.FAILED})
ALLOCATION_FINAL = frozenset({A.COMPLETED, A.TERMINATED})
# An allocation in one of these no longer holds a container; its resources can be released.
ALLOCATION_ENDED = frozenset({A.STOPPED, A.FAILED, A.COMPLETED, A.TERMINATED})


def advance_deployment(state: DeploymentStatus, event: str) -> DeploymentStatus:
    try:
        return DEPLOYMENT_TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition("deployment", state.value, event) from None


def advance_allocation(state: AllocationStatus, event: str) -> AllocationStatus:
    try:
        return ALLOCATION_TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition("allocation", state.value, event) from None
