"""The real world: the fake provider (Starlette), the asyncio + httpx port of upstream's loop, its
clocks and the server job path's port. Knows nothing of folders, experiments or reports.
"""
