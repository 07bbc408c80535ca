"""The operator's fence: the token of the current leadership term, kept in the registry.

Two operator replicas may both believe they lead for a moment (a black-holed API server,
a paused process): the Lease alone cannot stop a request already on its way. So every
start and close request the leader sends carries its term's *fencing token* (the Lease's
``leaseTransitions``, which grows with every new holder), and the registry keeps the
highest token published so far, the *fence* (``_keys.FENCE_KEY``). A new leader raises
the fence before it places or closes anything; the raise is one script that never lowers
it, so a deposed leader's late raise changes nothing. Then (G8):

- a node's claim and commit of a start request (the one claim path the launcher and the
  sidecar share) refuse a request whose token is below the fence: :attr:`StartClaim.FENCED`,
  and the registry answers it with :attr:`StartRejection.FENCED`;
- a close request with a token below the fence is neither written nor pushed
  (:class:`~callboard.errors.DeposedLeaderError`); a close flag written earlier in an old
  term is ignored by nodes that poll it once the fence rose above its token.

Requests without a token (Vision Agents tools, the CLI, older operators) are never
fenced, and Vision Agents nodes, which only test that a close flag exists, work as before.
Over a store without scripts the checks are read then written (see
:mod:`callboard.registry.index`).
"""

from __future__ import annotations

from callboard.errors import ConfigurationError
from callboard.registry import _keys as k
from callboard.registry._core import RegistryCore
from callboard.registry.index import deposed_error, flag_token

__all__ = ["Fencing"]


class Fencing(RegistryCore):
    """Publishing and reading the operator's fence."""

    async def raise_fence(self, token: int) -> int:
        """Raise the fence to ``token`` (a new leadership term); never lower it.

        Returns the fence after the call. When it is above ``token`` a newer term has
        begun, and this term's requests would all be refused: raises
        :class:`~callboard.errors.DeposedLeaderError` so the caller stops acting.
        """
        if isinstance(token, bool) or not isinstance(token, int) or token < 0:
            raise ConfigurationError(f"a fencing token is an integer >= 0, got {token!r}")
        fence = await self._index.raise_fence(token)
        if fence > token:
            raise deposed_error("raising the fence", token, fence)
        return fence

    async def get_fence(self) -> int | None:
        """The fence (the current leadership term's token), or None when none is published."""
        return flag_token(await self._store.get(k.FENCE_KEY))
