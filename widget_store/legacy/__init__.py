"""Workflows of earlier versions, kept registered until none of them is left in flight.

A workflow's name stands for its step list (`checkpoints.Workflow`). When the saga's
steps change, the new saga gets a new name and the old one moves here, step for step,
so that a checkout started by the old code replays its history and finishes the way
that code would have. Delete a module here once no workflow of its names is PENDING
(the operations view's timeline shows each workflow's name and version).
"""
