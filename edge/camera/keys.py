"""The window's keys: what each one does to the loop's state, a pure function (`handle_key`) so
it can be tested without a window."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..engine import ROUTINGS


@dataclass(frozen=True)
class LoopState:
    """What the keys control: the frames' routing and tiling, pausing, and whether the views
    that won nothing are drawn (faint) or only the winners."""

    routing: str = "auto"
    tiling: bool = True
    paused: bool = False
    all_views: bool = False


KEYS = {ord("q"): "quit", 27: "quit", ord("e"): "engine", ord("t"): "tiling",
        ord("s"): "snapshot", ord(" "): "pause", ord("v"): "views"}
KEY_HELP = "q/Esc quit, e engine, t tiling, v all views, s snapshot, space pause"


def handle_key(state: LoopState, key: int) -> tuple[LoopState, str | None]:
    """Apply a key code (as cv2.waitKey returns it; -1: none) to the state.

    Returns the new state and the action taken: quit, engine (next routing),
    tiling, snapshot, pause, views, or None for no key or an unbound one.
    """
    if key < 0:
        return state, None
    action = KEYS.get(ord(chr(key & 0xFF).lower()))
    if action == "engine":
        state = replace(state, routing=ROUTINGS[(ROUTINGS.index(state.routing) + 1) % len(ROUTINGS)])
    elif action == "tiling":
        state = replace(state, tiling=not state.tiling)
    elif action == "pause":
        state = replace(state, paused=not state.paused)
    elif action == "views":
        state = replace(state, all_views=not state.all_views)
    return state, action
