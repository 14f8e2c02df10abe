"""The compiled runs loop restates some of the reference's constants (numba's cache is keyed on
the loop's own file, so it keeps its own copies): each copy equals its source."""

from sim import provider, run_server, runs_nb_loop, runs_world
from sim.rules import Step
from sim.run_machine import Phase


def test_the_loops_constants_equal_the_reference_ones() -> None:
    nl = runs_nb_loop
    assert (nl.RESET_ST, nl.TRUNC_ST) == (provider.RESET, provider.TRUNCATED)
    assert nl.MAX_CONFIRMS_PER_SCAN == run_server.MAX_CONFIRMS_PER_SCAN
    assert nl.CANCELLED == runs_world.CANCELLED
    steps = (nl.CONTENT, nl.ACTIONS, nl.TTS, nl.OUTLINE, nl.AGENTS, nl.MEDIA)
    assert steps == tuple(
        int(Step[n]) for n in ("CONTENT", "ACTIONS", "TTS", "OUTLINE", "AGENTS", "MEDIA")
    )
    phases = (nl.PREPARING, nl.OUTLINING, nl.AWAITING, nl.GENERATING, nl.PAUSED, nl.COMPLETED)
    assert phases == tuple(range(len(Phase))) and len(phases) == len(Phase)
