"""Multilevel force-directed layout for very large compute graphs.

The graph is given as flat numpy arrays (never one Python object per vertex):
``n`` vertices, edge arrays ``src``/``dst`` (duplicates allowed; they add up),
optional ``weight`` (bytes communicated), optional ``group`` (layer id) and
``subgroup`` (e.g. tile within layer).  Vertex->tensor bipartite graphs and
vertex-vertex graphs are handled the same way: every node is a point.

Algorithm
---------
1. **Coarsening.**  A hierarchy of ever smaller graphs is built.  Coarse node
   masses are the number of original vertices they stand for, coarse edge
   weights are summed.  When ``subgroup``/``group`` are given they are used as
   hard constraints: nodes are first merged inside a subgroup by heavy-edge
   matching until the subgroup is (almost) one node, then each subgroup is
   collapsed to one node, the same happens inside groups, and finally the
   graph of groups is coarsened further without constraint.  Without the
   hierarchy, plain heavy-edge matching is used (vectorised: each node picks
   its heaviest admissible neighbour with a per-row max over a CSR matrix,
   mutual picks are matched, 3 rounds, leftovers join their best matched
   neighbour).
2. **Force model.**  Spring-electrical: an edge of weight ``w`` pulls its
   ends together with force ``w * d**a`` (``attraction=a``, default 1:
   linear springs; 0 gives LinLog), every pair of nodes repels with
   ``kr * m_i * m_j / d**p`` (``repulsion=p``, default 2: a shorter range
   than the Coulomb ``1/d``, so big layers become round clouds whose area
   grows with their size instead of collapsing to dots far apart), plus a
   weak gravity towards the centre (constant inside two RMS radii, growing
   outside) that keeps loose pieces in the picture.  ``kr`` is fixed once
   from the virial balance of the coarsest layout, so the scale is
   consistent across levels.
3. **Coarsest graph:** exact O(n^2) repulsion (n <= 400 nodes; otherwise
   the grid) with a few hundred iterations from a random start.
4. **Prolongation / refinement:** children start at their parent's position
   plus a random offset within the parent's local radius (from the grid
   density), then a few vectorised iterations run: attraction with per-edge
   gathers + ``np.bincount`` scatters, repulsion with a particle-mesh scheme
   (cloud-in-cell mass deposit on a grid of at most 512x512 cells, FFT
   convolution with the pair potential, finite-difference gradient,
   cloud-in-cell interpolation back), which costs O(n + m + G^2 log G) per
   iteration.  Each node moves at most ``step`` times its local radius per
   iteration (forces are normalised by the sum of force magnitudes acting
   on it), with the step cooling geometrically.  The number of iterations
   per level falls with level size (5 on the multi-million finest levels).
   Nodes without edges are not moved below the coarsest level: they stay
   next to the rest of their cluster.

Everything is deterministic for a given ``seed`` (one ``numpy`` Generator,
sequential bincount sums, deterministic FFT).
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np
import scipy.fft as sfft
import scipy.sparse as sp

__all__ = ["layout"]

_EXACT_MAX = 400           # coarsest graphs up to this size use exact repulsion
_COARSE_TARGET = 200       # stop unconstrained coarsening at this many nodes
_GRID_MAX = 512           # particle-mesh grid cells per side (at most)
_MAX_JUMP = 8             # largest size ratio of a hierarchy-collapse level
_EDGE_CHUNK = 1 << 23      # edges processed per chunk (bounds temporaries)
_WORKERS = 2               # FFT threads (deterministic regardless of count)


# --------------------------------------------------------------------------
# graph helpers
# --------------------------------------------------------------------------
def _dedupe(n: int, u: np.ndarray, v: np.ndarray, w: np.ndarray):
    """Canonical undirected edge list (u < v), self loops removed, duplicate
    pairs summed, sorted by (u, v).  Uses a scipy COO->CSR counting sort."""
    keep = u != v
    if not keep.all():
        u, v, w = u[keep], v[keep], w[keep]
    a = np.minimum(u, v)
    b = np.maximum(u, v)
    del u, v, keep
    mat = sp.csr_matrix((w, (a, b)), shape=(n, n), dtype=np.float32)
    del a, b
    mat.sum_duplicates()
    indptr = mat.indptr
    rows = np.repeat(np.arange(n, dtype=np.int32), np.diff(indptr).astype(np.int64))
    cols = mat.indices.astype(np.int32, copy=False)
    data = mat.data.astype(np.float32, copy=False)
    return rows, cols, data


def _weighted_degree(n, u, v, w):
    return (np.bincount(u, w, minlength=n) + np.bincount(v, w, minlength=n))


def _match(n, u, v, w, mass, lab, rng, pair_isolated=False):
    """One level of vectorised heavy-edge matching.  Returns (cmap, nc).

    ``lab`` (or None) restricts merges to nodes with equal labels."""
    if lab is not None:
        ok = lab[u] == lab[v]
        u, v, w = u[ok], v[ok], w[ok]
    m = u.size
    cid = np.full(n, -1, dtype=np.int64)
    nc = 0
    if m:
        # symmetric score, perturbed per undirected edge to break ties
        sc = (w / (mass[u] * mass[v])).astype(np.float32)
        sc *= (1.0 + 0.05 * rng.random(m, dtype=np.float32))
        r = np.concatenate([u, v])
        c = np.concatenate([v, u])
        s2 = np.concatenate([sc, sc])
        del sc
        mat = sp.csr_matrix((s2, (r, c)), shape=(n, n), dtype=np.float32)
        del r, c, s2
        indptr = mat.indptr
        cols = mat.indices
        data = mat.data
        cnt = np.diff(indptr)
        rows = np.repeat(np.arange(n, dtype=np.int32), cnt)
        nonempty = np.flatnonzero(cnt > 0)
        starts = indptr[:-1][nonempty]
        matched = np.zeros(n, dtype=bool)
        ar = np.arange(n)

        def best_pick(valid):
            s = np.where(valid, data, np.float32(-1.0))
            rowmax = np.full(n, -1.0, dtype=np.float32)
            if nonempty.size:
                rowmax[nonempty] = np.maximum.reduceat(s, starts)
            cand = valid & (s == rowmax[rows])
            best = np.full(n, -1, dtype=np.int64)
            best[rows[cand]] = cols[cand]
            return best

        for _ in range(3):
            valid = ~(matched[rows] | matched[cols])
            if not valid.any():
                break
            best = best_pick(valid)
            has = best >= 0
            bb = np.where(has, best, 0)
            mutual = has & (best[bb] == ar) & (ar < bb)
            a = np.flatnonzero(mutual)
            if a.size == 0:
                break
            b = best[a]
            ids = nc + np.arange(a.size)
            cid[a] = ids
            cid[b] = ids
            matched[a] = True
            matched[b] = True
            nc += a.size
        # leftovers join their best matched neighbour
        valid = (~matched[rows]) & matched[cols]
        if valid.any():
            best = best_pick(valid)
            lone = np.flatnonzero(best >= 0)
            cid[lone] = cid[best[lone]]
    rest = np.flatnonzero(cid < 0)
    if rest.size and (lab is not None or pair_isolated):
        if lab is None:
            # only nodes without any edge: pair consecutive ones
            deg = np.bincount(u, minlength=n) + np.bincount(v, minlength=n)
            pr = rest[deg[rest] == 0]
            key = np.zeros(pr.size, dtype=np.int64)
        else:
            # leftovers with no admissible partner: pair them with another
            # leftover of the same cluster (the label says they belong together)
            pr = rest[np.argsort(lab[rest], kind="stable")]
            key = lab[pr]
        if pr.size:
            newrun = np.ones(pr.size, dtype=bool)
            newrun[1:] = key[1:] != key[:-1]
            runstart = np.maximum.accumulate(np.where(newrun, np.arange(pr.size), 0))
            opens = (np.arange(pr.size) - runstart) % 2 == 0
            ids = nc + np.cumsum(opens) - 1
            cid[pr] = ids
            nc = int(ids[-1]) + 1
        rest = np.flatnonzero(cid < 0)
    if rest.size:
        cid[rest] = nc + np.arange(rest.size)
        nc += rest.size
    return cid.astype(np.int32), nc


def _relabel(lab):
    uniq, inv = np.unique(lab, return_inverse=True)
    return inv.astype(np.int32).ravel(), uniq.size


class _Level:
    __slots__ = ("n", "u", "v", "w", "mass", "cmap")

    def __init__(self, n, u, v, w, mass):
        self.n, self.u, self.v, self.w, self.mass = n, u, v, w, mass
        self.cmap = None    # map from this level's nodes to the next (coarser)


def _coarsen_to(level: _Level, cmap: np.ndarray, nc: int) -> _Level:
    level.cmap = cmap
    mass = np.bincount(cmap, level.mass, minlength=nc)
    cu, cv, cw = _dedupe(nc, cmap[level.u], cmap[level.v], level.w)
    return _Level(nc, cu, cv, cw, mass)


def _build_hierarchy(lv0: _Level, labels, rng, progress):
    levels = [lv0]
    cur = lv0
    fine2cur = np.arange(lv0.n, dtype=np.int32)    # original vertex -> current node
    for lab in labels + [None]:
        if lab is not None:
            lab0, nlab = _relabel(lab)
            lab = np.empty(cur.n, dtype=np.int32)
            lab[fine2cur] = lab0                   # well defined: merges respect labels
        while True:
            if lab is None and cur.n <= _COARSE_TARGET:
                break
            if lab is not None and cur.n <= 1.3 * nlab:
                break
            cmap, nc = _match(cur.n, cur.u, cur.v, cur.w, cur.mass, lab, rng,
                              pair_isolated=lab is None)
            if nc > 0.9 * cur.n:
                break
            if lab is not None:
                newlab = np.empty(nc, dtype=np.int32)
                newlab[cmap] = lab
                lab = newlab
            cur = _coarsen_to(cur, cmap, nc)
            fine2cur = cmap[fine2cur]
            levels.append(cur)
            if progress:
                progress(f"coarsen: level {len(levels) - 1}: {nc} nodes, {cur.u.size} edges", 0.0)
        if lab is not None and nlab < cur.n:
            if cur.n > _MAX_JUMP * nlab:
                # matching inside these clusters stalled (they have few
                # internal edges); collapsing now would be too big a jump
                # for a good prolongation: go on under the next constraint
                continue
            cur = _coarsen_to(cur, lab, nlab)
            fine2cur = lab[fine2cur]
            levels.append(cur)
            if progress:
                progress(f"coarsen: level {len(levels) - 1}: {nlab} nodes (hierarchy)", 0.0)
    return levels


# --------------------------------------------------------------------------
# forces
# --------------------------------------------------------------------------
def _attraction(X, u, v, w, a):
    """Attraction along edges: force w * d**a towards the other end.
    Returns (F, sum of force magnitudes per node)."""
    n = X.shape[0]
    x = X[:, 0].astype(np.float32)
    y = X[:, 1].astype(np.float32)
    F = np.zeros((n, 2))
    S = np.zeros(n)
    for s in range(0, u.size, _EDGE_CHUNK):
        uu = u[s:s + _EDGE_CHUNK]
        vv = v[s:s + _EDGE_CHUNK]
        ww = w[s:s + _EDGE_CHUNK]
        dx = x[vv] - x[uu]
        dy = y[vv] - y[uu]
        d = np.sqrt(dx * dx + dy * dy)
        d += np.float32(1e-9)
        if a == 1.0:
            c = ww
            mag = ww * d
        else:
            mag = ww * d ** np.float32(a)
            c = mag / d
        dx *= c
        dy *= c
        F[:, 0] += np.bincount(uu, dx, minlength=n) - np.bincount(vv, dx, minlength=n)
        F[:, 1] += np.bincount(uu, dy, minlength=n) - np.bincount(vv, dy, minlength=n)
        S += np.bincount(uu, mag, minlength=n) + np.bincount(vv, mag, minlength=n)
    return F, S


def _exact_field(X, mass, soft2, p=1.0):
    """sum_j m_j (x_i - x_j) / (|x_i - x_j|^2 + soft2)^((p+1)/2), exact, O(n^2)."""
    x = X[:, 0]
    y = X[:, 1]
    dx = x[:, None] - x[None, :]
    dy = y[:, None] - y[None, :]
    q = dx * dx
    q += dy * dy
    q += soft2
    if p != 1.0:
        q **= (p + 1.0) / 2.0
    np.divide(mass[None, :], q, out=q)
    return np.stack([(q * dx).sum(1), (q * dy).sum(1)], 1)


_KERNEL_CACHE: dict = {}


def _kernel_hat(G, p=1.0):
    """FFT of the softened pair potential phi(r) on a (2G, 2G) grid, in cell
    units: -ln r for p == 1, r^(1-p) / (p-1) otherwise; force = -grad phi."""
    k = _KERNEL_CACHE.get((G, p))
    if k is None:
        off = np.arange(2 * G, dtype=np.float64)
        off[off >= G] -= 2 * G
        dy, dx = np.meshgrid(off, off, indexing="ij")
        r2 = dx * dx + dy * dy + 1.0          # softening: one cell
        if p == 1.0:
            phi = -0.5 * np.log(r2)
        else:
            phi = r2 ** ((1.0 - p) / 2.0) / (p - 1.0)
        k = sfft.rfft2(phi.astype(np.float32), workers=_WORKERS)
        _KERNEL_CACHE[(G, p)] = k
    return k


class _Grid:
    """Cloud-in-cell particle-mesh repulsion field and local density."""

    def __init__(self, X, mass, G):
        lo = X.min(0)
        hi = X.max(0)
        ext = float((hi - lo).max()) * 1.02 + 1e-9
        mid = (lo + hi) * 0.5
        self.h = ext / (G - 1)
        self.o = mid - ext * 0.5
        g = (X - self.o) / self.h
        ix = np.clip(np.floor(g[:, 0]), 0, G - 2).astype(np.int32)
        iy = np.clip(np.floor(g[:, 1]), 0, G - 2).astype(np.int32)
        fx = np.clip(g[:, 0] - ix, 0.0, 1.0)
        fy = np.clip(g[:, 1] - iy, 0.0, 1.0)
        idx = iy * G + ix
        w00 = (1 - fx) * (1 - fy)
        w10 = fx * (1 - fy)
        w01 = (1 - fx) * fy
        w11 = fx * fy
        rho = (np.bincount(idx, mass * w00, G * G) + np.bincount(idx + 1, mass * w10, G * G)
               + np.bincount(idx + G, mass * w01, G * G) + np.bincount(idx + G + 1, mass * w11, G * G))
        self.G, self.idx = G, idx
        self.w = (w00, w10, w01, w11)
        self.rho = rho.reshape(G, G)

    def interp(self, field):
        f = field.ravel()
        G, idx = self.G, self.idx
        w00, w10, w01, w11 = self.w
        return f[idx] * w00 + f[idx + 1] * w10 + f[idx + G] * w01 + f[idx + G + 1] * w11

    def field(self, p=1.0):
        G = self.G
        kh = _kernel_hat(G, p)
        pad = np.zeros((2 * G, 2 * G), dtype=np.float32)
        pad[:G, :G] = self.rho
        phi = sfft.irfft2(sfft.rfft2(pad, workers=_WORKERS) * kh, s=pad.shape,
                          workers=_WORKERS)[:G + 1, :G + 1]
        # central differences (one-sided at the border); force = -grad phi
        gy, gx = np.gradient(phi[:G, :G])
        return np.stack([self.interp(-gx), self.interp(-gy)], 1) / self.h ** p

    def density(self):
        """Mass per unit area at each node (cloud-in-cell)."""
        return self.interp(self.rho) / (self.h * self.h)


def _grid_size(n):
    return int(min(_GRID_MAX, max(32, 2 ** math.ceil(math.log2(math.sqrt(n))))))


def _refine(X, lv: _Level, kr, kg, a, p, iters, step0, step1, exact, top=False):
    """Run ``iters`` force iterations on level ``lv`` (in place on X).
    Returns the local radius of each node (for prolongation)."""
    n = lv.n
    mass = lv.mass
    M = mass.sum()
    u, v, w = lv.u, lv.v, lv.w
    passive = None
    if not top:
        # nodes without edges stay where their parent put them (near the
        # rest of their group); pushed by repulsion alone they would only
        # drift off to the rim
        deg = np.bincount(u, minlength=n) + np.bincount(v, minlength=n)
        if (deg == 0).any():
            passive = deg == 0
    G = _grid_size(n)
    s = None
    for it in range(iters):
        step = step0 * (step1 / step0) ** (it / max(1, iters - 1))
        if u.size:
            F, norm = _attraction(X, u, v, w, a)
        else:
            F, norm = np.zeros((n, 2)), np.zeros(n)
        c = X.mean(0)
        if exact:
            R = np.sqrt(((X - c) ** 2).sum(1).mean()) + 1e-12
            soft2 = (0.05 * R) ** 2 / n
            Fr = (kr * mass)[:, None] * _exact_field(X, mass, soft2, p)
            s = R * np.sqrt(mass / M) * 1.5
        else:
            grid = _Grid(X, mass, G)
            Fr = (kr * mass)[:, None] * grid.field(p)
            rho = np.maximum(grid.density(), 1e-12)
            s = np.sqrt(mass / rho)
            # never move more than ~2 grid cells in one step
            s = np.minimum(s, 2.0 * grid.h)
        F += Fr
        norm += np.sqrt((Fr * Fr).sum(1))
        del Fr
        dc = X - c
        dn = np.sqrt((dc * dc).sum(1)) + 1e-12
        # constant pull inside 2 RMS radii, growing linearly outside (keeps
        # isolated vertices and loose components close to the picture)
        rref = 2.0 * np.sqrt((dn * dn).mean())
        gm = kg * mass * np.maximum(1.0, dn / rref)
        F -= (gm / dn)[:, None] * dc
        norm += gm + 1e-30
        # |F| <= norm, so every node moves at most step * (its local radius)
        mv = step * s / norm
        if passive is not None:
            mv[passive] = 0.0
        X += F * mv[:, None]
    if s is None:
        R = np.sqrt(((X - X.mean(0)) ** 2).sum(1).mean()) + 1e-12
        s = R * np.sqrt(mass / M)
    return s


def _pair_sum(X, mass, p, rng, sample=400_000):
    """sum over pairs m_i m_j d_ij^(1-p) (exact for small n, else sampled)."""
    n = X.shape[0]
    M = float(mass.sum())
    P = 0.5 * (M * M - float((mass ** 2).sum()))
    if p == 1.0:
        return max(P, 1e-12)
    if n * n <= 2 * sample:
        i, j = np.triu_indices(n, 1)
    else:
        i = rng.integers(0, n, sample)
        j = rng.integers(0, n, sample)
        k = i != j
        i, j = i[k], j[k]
    d = np.sqrt(((X[i] - X[j]) ** 2).sum(1)) + 1e-12
    mm = mass[i] * mass[j]
    if not mm.sum() > 0:        # one node (a tiny graph coarsened to one): no pairs to repel
        return max(P, 1e-30)
    return max(P * float((mm * d ** (1 - p)).sum() / mm.sum()), 1e-30)


def _energy_parts(X, lv: _Level, a):
    """(sum_e w_e d_e^(a+1), sum_i m_i |x_i - c|) for the virial scale balance."""
    A = 0.0
    for s in range(0, lv.u.size, _EDGE_CHUNK):
        d = X[lv.v[s:s + _EDGE_CHUNK]] - X[lv.u[s:s + _EDGE_CHUNK]]
        A += float((np.sqrt((d * d).sum(1)) ** (a + 1) * lv.w[s:s + _EDGE_CHUNK]).sum())
    c = X.mean(0)
    Gr = float((np.sqrt(((X - c) ** 2).sum(1)) * lv.mass).sum())
    return A, Gr


# --------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------
def layout(n: int, src, dst, weight=None, group=None, subgroup=None, seed: int = 0,
           iterations: int = 30, attraction: float = 1.0, repulsion: float = 2.0,
           gravity: float = 0.1,
           progress: Optional[Callable[[str, float], None]] = None) -> np.ndarray:
    """Lay out a graph of ``n`` vertices; returns float32 positions (n, 2).

    Parameters
    ----------
    n : number of vertices.
    src, dst : int arrays (m,) of edge endpoints (duplicates add up; self
        loops are ignored; direction is ignored).
    weight : optional float array (m,), e.g. bytes communicated (default 1).
    group : optional int array (n,), coarse cluster id (layer).  Vertices of
        one group are merged together before vertices of different groups.
    subgroup : optional int array (n,), finer cluster id (e.g. tile); only
        meaningful together with / inside ``group`` (the pair is used).
    seed : RNG seed; the result is a deterministic function of the inputs.
    iterations : refinement iterations for a level of ~20k nodes; smaller
        levels get more (the coarsest at least 300), larger fewer (>= 4).
    attraction : exponent ``a`` of the attraction force ``w * d**a``
        (0 = LinLog: very compact, far apart clusters; 1 = linear springs,
        the default; 2 = Fruchterman-Reingold).
    progress : optional callable ``progress(message, fraction_done)``.

    The coordinates are in arbitrary units, centred on 0 with an RMS radius
    of ``sqrt(n)``.
    """
    n = int(n)
    if n <= 0:
        return np.zeros((0, 2), np.float32)
    rng = np.random.default_rng(seed)
    src = np.asarray(src)
    dst = np.asarray(dst)
    if src.shape != dst.shape:
        raise ValueError("src and dst must have the same shape")
    if src.size and (min(src.min(), dst.min()) < 0 or max(src.max(), dst.max()) >= n):
        raise ValueError("edge endpoint out of range")
    if weight is None:
        w = np.ones(src.size, dtype=np.float32)
    else:
        w = np.asarray(weight, dtype=np.float32)
        if w.shape != src.shape:
            raise ValueError("weight must have the same shape as src")
        if w.size and w.min() < 0:
            raise ValueError("weights must be non-negative")
    if n == 1:
        return np.zeros((1, 2), np.float32)

    def say(msg, frac):
        if progress:
            progress(msg, frac)

    u, v, w = _dedupe(n, src.astype(np.int32, copy=False), dst.astype(np.int32, copy=False), w)
    if w.size:
        wpos = w[w > 0]
        if wpos.size:
            w = w / np.float32(wpos.mean())     # scale-free: mean weight 1
    say(f"input: {n} vertices, {u.size} distinct edges", 0.0)

    labels = []
    if group is not None:
        group = np.asarray(group).ravel()
        if group.size != n:
            raise ValueError("group must have length n")
    if subgroup is not None:
        subgroup = np.asarray(subgroup).ravel()
        if subgroup.size != n:
            raise ValueError("subgroup must have length n")
        if group is not None:
            g, _ = _relabel(group)
            sg, _ = _relabel(subgroup)
            key = g.astype(np.int64) * (int(sg.max()) + 1) + sg
            labels.append(key)
        else:
            labels.append(subgroup)
    if group is not None:
        labels.append(group)

    lv0 = _Level(n, u, v, w, np.ones(n, dtype=np.float64))
    levels = _build_hierarchy(lv0, labels, rng, progress)
    say(f"hierarchy: {len(levels)} levels, coarsest {levels[-1].n} nodes", 0.05)

    # ---- coarsest level ---------------------------------------------------
    top = levels[-1]
    M = float(top.mass.sum())
    R0 = math.sqrt(M)
    ang = rng.random(top.n) * 2 * np.pi
    rad = R0 * np.sqrt(rng.random(top.n))
    X = np.stack([rad * np.cos(ang), rad * np.sin(ang)], 1)
    W = float(top.w.sum())
    # gravity per unit mass: a small fraction of the mean attraction per unit mass
    kg = gravity * max(W, 1e-3 * M) * 2.0 / M
    a = float(attraction)
    p = float(repulsion)
    A, Gr = _energy_parts(X, top, a)
    kr = (A + kg * Gr) / _pair_sum(X, top.mass, p, rng)
    exact = top.n <= _EXACT_MAX
    it_top = max(300, 4 * iterations) if exact else max(60, 2 * iterations)
    s = _refine(X, top, kr, kg, a, p, it_top, 1.0, 0.02, exact, top=True)
    # rescale to RMS radius sqrt(M) (kr scales along: LinLog is scale free)
    R = np.sqrt(((X - X.mean(0)) ** 2).sum(1).mean()) + 1e-12
    lam = R0 / R
    X = (X - X.mean(0)) * lam
    s = s * lam
    # attraction/gravity forces scale as lam**a, repulsion as lam**-p
    kr *= lam ** (a + p)
    kg *= lam ** a
    total_work = sum(lv.n + lv.u.size for lv in levels[:-1]) or 1
    done = 0
    say("coarsest layout done", 0.1)

    # ---- prolong and refine ----------------------------------------------
    for li in range(len(levels) - 2, -1, -1):
        lv = levels[li]
        cm = lv.cmap
        ang = rng.random(lv.n) * 2 * np.pi
        rad = np.sqrt(rng.random(lv.n)) * 0.5 * s[cm]
        X = X[cm] + np.stack([rad * np.cos(ang), rad * np.sin(ang)], 1)
        del ang, rad
        exact = lv.n <= _EXACT_MAX
        it = int(np.clip(round(iterations * (20000.0 / lv.n) ** 0.35), 4, 2 * iterations))
        s = _refine(X, lv, kr, kg, a, p, it, 0.5, 0.05, exact)
        done += lv.n + lv.u.size
        say(f"refine: level {li}: {lv.n} nodes, {it} iterations", 0.1 + 0.9 * done / total_work)

    X -= X.mean(0)
    R = np.sqrt((X ** 2).sum(1).mean()) + 1e-12
    X *= math.sqrt(n) / R
    return X.astype(np.float32)
