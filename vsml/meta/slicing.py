"""What makes a step's result independent of the rank count and the chunking (docs/DESIGN.md §6).

``P`` work items per step — antithetic pairs for ES, episodes for meta-gradients —
carry global indices ``0..P-1``. Every random draw derives from the run seed, the
step and the item's global index (:func:`base_keys`, :func:`item_key`), so item i at
step g is the same whatever loop, rank count or chunking; rank r of N handles the
items :func:`item_slice` gives it; and sums over items that decide the update are
exact integers (:func:`fixed_point_sum`), the same in any order and any split.
"""

from __future__ import annotations

import math

import jax
import numpy as np

# Streams derived from the run seed: one for perturbations, one for episodes.
NOISE_STREAM, DATA_STREAM = 0, 1


def base_keys(seed: int) -> dict:
    """``{'noise': key, 'data': key}``: the per-run keys every step's randomness derives from."""
    root = jax.random.PRNGKey(seed)
    return {"noise": jax.random.fold_in(root, NOISE_STREAM), "data": jax.random.fold_in(root, DATA_STREAM)}


def item_key(base_key, generation, item_index):
    """``key(base, g, i)``: the same for an item whatever rank evaluates it."""
    return jax.random.fold_in(jax.random.fold_in(base_key, generation), item_index)


def item_slice(population_size: int, rank: int, num_ranks: int) -> np.ndarray:
    """Global indices of the items that rank ``rank`` of ``num_ranks`` evaluates: ``[r P/N, (r+1) P/N)``."""
    if population_size % num_ranks:
        raise ValueError(
            f"a population of {population_size} cannot be split evenly among {num_ranks} ranks; "
            f"use a multiple of {num_ranks}"
        )
    per_rank = population_size // num_ranks
    return np.arange(rank * per_rank, (rank + 1) * per_rank, dtype=np.int32)


# --------------------------------------------------------------------------- exact sums over ranks

# Float sums depend on their order, and a last bit can decide a float32 rounding (why that
# happens in practice: docs/DESIGN.md §6.4). Integers add associatively: every term is put
# on one fixed-point grid that all ranks agree on, and the int64 sums are exact in any
# order and any split over ranks.
FIXED_POINT_BITS = 62  # sums stay below 2**62 in magnitude: int64 never overflows


def fixed_point_scale(bound: float) -> float:
    """The power of two ``s`` with ``bound · s < 2**62``: the grid for terms whose magnitudes add up to ``bound``."""
    if not math.isfinite(bound) or bound <= 0.0:
        return 1.0
    return math.ldexp(1.0, FIXED_POINT_BITS - math.frexp(bound)[1])


def fixed_point_sum(terms: np.ndarray, scale: float) -> np.ndarray:
    """``sum`` over axis 0 of float ``terms [n, D]`` on the grid ``1/scale``, as exact int64 ``[D]``.

    Each term is rounded to the grid once (the same on every rank: it depends on the term
    alone); the integer sum then has no order. The grid step is ``2**-62`` of the bound, far
    below float32 resolution.
    """
    return np.rint(np.asarray(terms, dtype=np.float64) * scale).astype(np.int64).sum(axis=0)


def from_fixed_point(total: np.ndarray, scale: float) -> np.ndarray:
    """The float64 value of an int64 fixed-point sum (:func:`fixed_point_sum`)."""
    return np.asarray(total, dtype=np.float64) / scale
