"""Stopping a message move task (adapters/aws/sqs_redrive.py ``_stop``): the task's own
cancellation ends the stop quietly; a cancellation of whoever awaits the stop goes on up."""
import asyncio

import pytest

from manifold.adapters.aws.sqs_redrive import MoveTask, _stop

pytestmark = pytest.mark.timeout(30)


def running_task(in_batch: bool) -> MoveTask:
    task = MoveTask("source", None, None, 10)
    task.task = asyncio.get_running_loop().create_task(asyncio.sleep(3600))
    task.in_batch = in_batch
    return task


async def test_a_task_between_batches_is_cancelled_and_the_stop_returns():
    task = running_task(in_batch=False)
    await asyncio.wait_for(_stop(task), 5)
    assert task.task.cancelled()


async def test_the_callers_cancellation_is_not_swallowed():
    task = running_task(in_batch=True)  # mid-batch: the stop waits for it
    stopper = asyncio.get_running_loop().create_task(_stop(task))
    await asyncio.sleep(0.05)
    assert not stopper.done()
    stopper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(stopper, 5)
    assert not task.task.done()  # shielded: the batch under way is not cut short
    task.task.cancel()
