"""Winograd minimal-filtering convolution F(4×4, 3×3) and F(2×2, 3×3) for CPU float32 inference (Lavin & Gray,
CVPR 2016).

A 3×3, stride-1, zero-padding-1 convolution computes each 4×4 output tile from a 6×6 input tile with 36
multiplications per (input, output) channel pair instead of 144: Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A (F(2×2, 3×3): 16
instead of 36 per 2×2 tile).  Per block of tile rows:

1. input transform (numba): V[t, ξ, c] = (Bᵀ d_t B)[ξ] for every tile t and input channel c;
2. the α² matrix products M[t, ξ, :] = U[ξ] V[t, ξ, :] with U[ξ] = (G g Gᵀ)[ξ] (O × C), run as one oneDNN grouped
   1×1 convolution (α² groups, prepacked weights) on the NHWC view of V;
3. output transform (numba): y = Aᵀ M_t A + bias (+ residual), ReLU (+ a skip added after it), written into the
   NHWC output.

`WinogradConv3x3.from_transposed` runs a 5×5, stride-2 transposed convolution (2× upsampling) as the 3×3
convolution of its four sub-pixel phases.  The transforms use the interpolation points 0, ±1, ±2, ∞
(`winograd_matrices`); in float32 the result differs from a direct convolution by rounding only (a few 1e-5 of the
output's scale per convolution; ENet prepared with it stays within 3.7e-4 m of the authors' depth, measured by
`benchmarks/verify_upstream_penet.py`).  Activations are NHWC (channels_last); the input may come in parts that are
concatenated along the channels (never materialized).  Built for `published.penet`; any 3×3 stride-1 convolution
whose input, bias and residual are float32 CPU tensors (batch 1) can use it.
"""

from __future__ import annotations

import threading
from fractions import Fraction

import numba
import numpy as np
import torch
from torch import Tensor

from .device import onednn_ops
from .kernel_propagation import match_torch_threads

__all__ = ["TILE", "WinogradConv3x3", "available", "warm_up", "winograd_matrices"]

TILE = 4  # default output tile side, pixels
# Tile rows per block (one oneDNN call).  Transformed weights U of at most _SMALL_WEIGHTS bytes are cheap to read
# again for every block: then blocks of max(2, threads) tile rows keep V and M close to the cores (measured at
# 1216x352, 2 threads: 67 -> 64 channels 14.2-15.3 ms against 15.8-16.4 with 4 rows, 131 -> 128 channels 9.6-10.2
# against 11.1-11.5 with 8 rows).  Larger U (the deep layers) is read once for up to _BLOCK_TILES tiles (at KITTI
# size all of them, which measured best there).
_SMALL_WEIGHTS = 4 << 20
_BLOCK_TILES = 608


def winograd_matrices(points: tuple[Fraction | int, ...] = (0, 1, -1, 2, -2)) -> tuple[np.ndarray, ...]:
    """(Bᵀ (α×α), G (α×3), Aᵀ (m×α)) of F(m, 3) for the finite interpolation `points` plus ∞, α = len(points) + 1.

    Correlation y_j = Σ_k g_k d_{j+k} is the transpose of polynomial multiplication, so with the evaluation matrices
    V (α×α), V_g (α×3), V_z (α×m) at the points: Aᵀ = V_zᵀ, G = V_g, Bᵀ = V⁻ᵀ (rows rescaled to max |entry| 1, the
    scale moved into G).  Exact rational arithmetic, returned as float64.
    """
    pts = [Fraction(p) for p in points]
    a, m = len(pts) + 1, len(pts) + 1 - 2

    def row(p: Fraction, n: int) -> list[Fraction]:
        return [p**k for k in range(n)]

    inf = [[Fraction(int(k == n - 1)) for k in range(n)] for n in (a, 3, m)]
    V = [row(p, a) for p in pts] + [inf[0]]
    Vg = [row(p, 3) for p in pts] + [inf[1]]
    Vz = [row(p, m) for p in pts] + [inf[2]]
    inv = _inverse(V)
    bt = [[inv[j][i] for j in range(a)] for i in range(a)]  # V⁻ᵀ
    scale = [max(abs(v) for v in r) for r in bt]
    bt = [[v / s for v in r] for r, s in zip(bt, scale, strict=True)]
    g = [[v * s for v in r] for r, s in zip(Vg, scale, strict=True)]
    at = [[Vz[i][j] for i in range(a)] for j in range(m)]
    return tuple(np.array([[float(v) for v in r] for r in mat]) for mat in (bt, g, at))


def _inverse(mat: list[list[Fraction]]) -> list[list[Fraction]]:
    """Gauss-Jordan inverse in exact arithmetic."""
    n = len(mat)
    aug = [list(r) + [Fraction(int(i == j)) for j in range(n)] for i, r in enumerate(mat)]
    for col in range(n):
        piv = next(r for r in range(col, n) if aug[r][col] != 0)
        aug[col], aug[piv] = aug[piv], aug[col]
        p = aug[col][col]
        aug[col] = [v / p for v in aug[col]]
        for r in range(n):
            if r != col and aug[r][col] != 0:
                f = aug[r][col]
                aug[r] = [v - f * w for v, w in zip(aug[r], aug[col], strict=True)]
    return [r[n:] for r in aug]


def _float32_matrices(points: tuple[Fraction | int, ...]) -> dict[str, np.ndarray]:
    bt, g, at = winograd_matrices(points)
    return {"bt": bt.astype(np.float32), "g": g, "at": at.astype(np.float32)}


_MATRICES = {4: _float32_matrices((0, 1, -1, 2, -2)), 2: _float32_matrices((0, 1, -1))}  # by output tile side


def available() -> bool:
    """True where the oneDNN grouped convolution used for the products exists (torch CPU builds with mkldnn)."""
    return onednn_ops() is not None


# float32 constants of the specialized output transforms (numba keeps float32 arithmetic with them)
_F0, _F2, _F4, _F8 = np.float32(0.0), np.float32(2.0), np.float32(4.0), np.float32(8.0)

# The input transform is memory-bound: each of its loops runs once over a contiguous channel vector, reading the
# α rows it combines (α = 6 or 4, unrolled) and writing one, so that LLVM vectorizes it.  The output transforms
# keep per-channel scalar formulas (measured faster than vector loops over their short rows).


@numba.njit(inline="always", fastmath=True)
def _combine(out: np.ndarray, src: np.ndarray, k: np.ndarray) -> None:
    """out = Σ_a k[a] · src[a] over the α rows of src (channel vectors)."""
    n = out.shape[0]
    if src.shape[0] == 6:
        k0, k1, k2, k3, k4, k5 = k[0], k[1], k[2], k[3], k[4], k[5]
        s0, s1, s2, s3, s4, s5 = src[0], src[1], src[2], src[3], src[4], src[5]
        for c in range(n):
            out[c] = k0 * s0[c] + k1 * s1[c] + k2 * s2[c] + k3 * s3[c] + k4 * s4[c] + k5 * s5[c]
    else:
        k0, k1, k2, k3 = k[0], k[1], k[2], k[3]
        s0, s1, s2, s3 = src[0], src[1], src[2], src[3]
        for c in range(n):
            out[c] = k0 * s0[c] + k1 * s1[c] + k2 * s2[c] + k3 * s3[c]


@numba.njit(cache=True, parallel=True, fastmath=True)
def _input_transform(parts: tuple, ty0: int, nty: int, bt: np.ndarray, work: np.ndarray, v: np.ndarray) -> None:
    """v[t, α·i + q, :] = (Bᵀ d_t B)[i, q] for the α×α tiles (stride m = α − 2, zero padding 1) of tile rows
    ty0 … ty0+nty−1 of the channel concatenation of `parts` ((H, W, C_k) each; t counts the tiles of those rows).
    work: (≥ nty, 2, α, m·tw + 2, ΣC_k) scratch."""
    H, W = parts[0].shape[:2]
    C = v.shape[2]
    alpha = bt.shape[0]
    m = alpha - 2
    tw = (W + m - 1) // m
    wp = m * tw + 2  # padded row: column u of x is column u + 1
    for j in numba.prange(nty):
        rows = work[j, 0]  # the tile row's α input rows, zero padded
        r = work[j, 1]  # Bᵀ applied down the columns
        y0 = m * (ty0 + j) - 1
        for a in range(alpha):
            y = y0 + a
            if 0 <= y < H:
                rows[a, 0] = 0.0
                c0 = 0
                for x in parts:
                    rows[a, 1 : W + 1, c0 : c0 + x.shape[2]] = x[y]
                    c0 += x.shape[2]
                rows[a, W + 1 :] = 0.0
            else:
                rows[a] = 0.0
        flat = rows.reshape(alpha, wp * C)
        for i in range(alpha):
            _combine(r[i].reshape(wp * C), flat, bt[i])
        for tx in range(tw):
            t = j * tw + tx
            for i in range(alpha):
                patch = r[i, m * tx : m * tx + alpha]  # (α, C)
                for q in range(alpha):
                    _combine(v[t, alpha * i + q], patch, bt[q])


@numba.njit(inline="always", fastmath=True)
def _at(m0: float, m1: float, m2: float, m3: float, m4: float, m5: float) -> tuple:
    """Aᵀ m for one column of 6 values (the rows of `winograd_matrices()[2]`, checked by the tests)."""
    a, b, c, d = m1 + m2, m1 - m2, m3 + m4, m3 - m4
    return (m0 + a + c, b + _F2 * d, a + _F4 * c, b + _F8 * d + m5)


@numba.njit(inline="always", fastmath=True)
def _at2(m0: float, m1: float, m2: float, m3: float) -> tuple:
    """F(2, 3): Aᵀ m for one column of 4 values (rows of `winograd_matrices((0, 1, -1))[2]`, checked by the tests)."""
    return (m0 + m1 + m2, m1 - m2 + m3)


@numba.njit(inline="always", fastmath=True)
def _tile4(m: np.ndarray, t: int, tile: np.ndarray) -> None:
    """tile[p, q, :] = (Aᵀ M_t A)[p, q] for F(4×4, 3×3); m (T, 36, O)."""
    for o in range(tile.shape[2]):  # innermost over the channels
        k0 = _at(m[t, 0, o], m[t, 6, o], m[t, 12, o], m[t, 18, o], m[t, 24, o], m[t, 30, o])
        k1 = _at(m[t, 1, o], m[t, 7, o], m[t, 13, o], m[t, 19, o], m[t, 25, o], m[t, 31, o])
        k2 = _at(m[t, 2, o], m[t, 8, o], m[t, 14, o], m[t, 20, o], m[t, 26, o], m[t, 32, o])
        k3 = _at(m[t, 3, o], m[t, 9, o], m[t, 15, o], m[t, 21, o], m[t, 27, o], m[t, 33, o])
        k4 = _at(m[t, 4, o], m[t, 10, o], m[t, 16, o], m[t, 22, o], m[t, 28, o], m[t, 34, o])
        k5 = _at(m[t, 5, o], m[t, 11, o], m[t, 17, o], m[t, 23, o], m[t, 29, o], m[t, 35, o])
        for p in range(4):
            row = _at(k0[p], k1[p], k2[p], k3[p], k4[p], k5[p])
            for q in range(4):
                tile[p, q, o] = row[q]


@numba.njit(inline="always", fastmath=True)
def _tile2(m: np.ndarray, t: int, tile: np.ndarray) -> None:
    """tile[p, q, :] = (Aᵀ M_t A)[p, q] for F(2×2, 3×3); m (T, 16, O)."""
    for o in range(tile.shape[2]):
        k0 = _at2(m[t, 0, o], m[t, 4, o], m[t, 8, o], m[t, 12, o])
        k1 = _at2(m[t, 1, o], m[t, 5, o], m[t, 9, o], m[t, 13, o])
        k2 = _at2(m[t, 2, o], m[t, 6, o], m[t, 10, o], m[t, 14, o])
        k3 = _at2(m[t, 3, o], m[t, 7, o], m[t, 11, o], m[t, 15, o])
        for p in range(2):
            row = _at2(k0[p], k1[p], k2[p], k3[p])
            tile[p, 0, o] = row[0]
            tile[p, 1, o] = row[1]


@numba.njit(cache=True, parallel=True, fastmath=True)
def _output_transform(
    m: np.ndarray,
    ty0: int,
    nty: int,
    bias: np.ndarray,
    other: np.ndarray,
    has_other: bool,
    relu: bool,
    post: np.ndarray,
    has_post: bool,
    phases: bool,
    out: np.ndarray,
) -> None:
    """out[s·ty+p, s·tx+q, :O] = relu?(Aᵀ M_t A + bias + other) + post for the s×s tiles (s = 4 when m is
    (T, 36, O), 2 when (T, 16, O)) of tile rows ty0 … ty0+nty−1 (channels of out after the first O are left alone).

    With `phases`, m has 4·O channels, the sub-pixel phases of a 2× upsampled output (`from_transposed`).
    """
    H, W = out.shape[:2]
    n_out = m.shape[2]  # out may have more channels (appended after these)
    if phases:
        H, W = H // 2, W // 2  # the 3×3 convolution's grid; m has the 4 phases' channels
    side = 4 if m.shape[1] == 36 else 2
    tw = (W + side - 1) // side
    for j in numba.prange(nty):
        tile = np.empty((side, side, n_out), np.float32)
        ty = ty0 + j
        for tx in range(tw):
            t = j * tw + tx
            if side == 4:
                _tile4(m, t, tile)
            else:
                _tile2(m, t, tile)
            _write_tile(tile, ty, tx, H, W, phases, bias, other, has_other, relu, post, has_post, out)


@numba.njit(inline="always", fastmath=True)
def _write_tile(
    tile: np.ndarray,
    ty: int,
    tx: int,
    h: int,
    w: int,
    phases: bool,
    bias: np.ndarray,
    other: np.ndarray,
    has_other: bool,
    relu: bool,
    post: np.ndarray,
    has_post: bool,
    out: np.ndarray,
) -> None:
    """out[s·ty+p, s·tx+q, :] = relu?(tile[p, q, :] + bias + other) + post for the s×s tile's pixels inside the h×w
    grid; with `phases`, channel block φ = 2a + b of grid pixel (y, u) goes to output pixel (2y + a, 2u + b)."""
    side = tile.shape[0]
    n_out = tile.shape[2] // 4 if phases else tile.shape[2]
    for p in range(min(side, h - side * ty)):
        y = side * ty + p
        for q in range(min(side, w - side * tx)):
            u = side * tx + q
            for phase in range(4 if phases else 1):
                yy, uu = (2 * y + phase // 2, 2 * u + phase % 2) if phases else (y, u)
                for o in range(n_out):
                    val = tile[p, q, phase * n_out + o] + bias[o]
                    if has_other:
                        val += other[yy, uu, o]
                    if relu:
                        val = max(val, _F0)
                    if has_post:
                        val += post[yy, uu, o]
                    out[yy, uu, o] = val


def warm_up() -> None:
    """Compile (or load from numba's cache) the transforms for inputs of one and two parts, so that the first
    frame does not pay for it (seconds in a fresh install)."""
    match_torch_threads()  # starts numba's pool without changing torch's thread count
    for m in (4, 2):
        n, bt = (m + 2) ** 2, _MATRICES[m]["bt"]
        for count in (1, 2):
            parts = tuple(np.zeros((1, 1, 1), np.float32) for _ in range(count))
            work = np.zeros((1, 2, m + 2, m + 2, count), np.float32)
            _input_transform(parts, 0, 1, bt, work, np.zeros((1, n, count), np.float32))
        prod, bias, out = np.zeros((1, n, 1), np.float32), np.zeros(1, np.float32), np.zeros((1, 1, 1), np.float32)
        for has_post in (False, True):
            _output_transform(prod, 0, 1, bias, out, True, True, out, has_post, False, out)


_SCRATCH = threading.local()


def _scratch(shape: tuple[int, ...]) -> np.ndarray:
    """The input transform's work array of this shape, one per thread and shape, shared by all convolutions (reused:
    fresh pages cost more than the transforms; shared: one per layer took 0.48 GB in ENet at 1216×352)."""
    arrays = getattr(_SCRATCH, "arrays", None)
    if arrays is None:
        arrays = _SCRATCH.arrays = {}
    if shape not in arrays:
        arrays[shape] = np.empty(shape, np.float32)
    return arrays[shape]


# rows of a 5×5 transposed-convolution kernel (stride 2, padding 2) feeding output phase a from input offset dy:
# out[2i + a] = Σ_dy in[i + dy] · w[_PHASE_TAP[a][dy + 1]]  (−1: no tap)
_PHASE_TAP = ((4, 2, 0), (-1, 3, 1))


def _phase_weights(weight: Tensor) -> Tensor:
    """(C, O, 5, 5) transposed-convolution weight (stride 2, padding 2, output padding 1) -> the (4·O, C, 3, 3)
    weight of the equivalent 3×3 convolution on the input grid whose channel block φ = 2a + b is output phase
    (row 2i + a, column 2j + b)."""
    n_in, n_out = weight.shape[:2]
    out = weight.new_zeros(4, n_out, n_in, 3, 3)
    for a in range(2):
        for b in range(2):
            for ky, kr in enumerate(_PHASE_TAP[a]):
                for kx, kc in enumerate(_PHASE_TAP[b]):
                    if kr >= 0 and kc >= 0:
                        out[2 * a + b, :, :, ky, kx] = weight[:, :, kr, kc].T
    return out.reshape(4 * n_out, n_in, 3, 3)


class WinogradConv3x3:
    """A 3×3, stride-1, padding-1 convolution with bias as Winograd F(m×m, 3×3) (module docstring); inference only.

    `from_transposed` builds the 5×5, stride-2 transposed convolution (2× upsampling) as its four sub-pixel phases
    (either tile size).

    Args:
        weight: (O, C, 3, 3) float32, the (batch-norm folded) convolution weight.
        bias: (O,) float32 or None.
        tile: output tile side m: 4 (36 products per 16 outputs, the default) or 2 (16 per 4: 2.25× fewer
            multiplications than direct instead of 4×, and 16/36 of the transformed weights' memory, for wide
            layers on small images where reading those weights dominates).
    """

    def __init__(self, weight: Tensor, bias: Tensor | None, *, tile: int = TILE, _phases: bool = False) -> None:
        if tile not in (2, 4):
            raise ValueError(f"tile: expected 4 or 2, got {tile!r}")
        if _phases:
            n_in, n_out = weight.shape[:2]
        else:
            if weight.dim() != 4 or tuple(weight.shape[2:]) != (3, 3):
                raise ValueError(f"weight: expected (O, C, 3, 3), got {tuple(weight.shape)}")
            n_out, n_in = weight.shape[:2]
        self.tile, self.phases = tile, _phases
        self.in_channels, self.out_channels = n_in, n_out
        self._bias = (torch.zeros(n_out) if bias is None else bias.detach().float().cpu()).contiguous().numpy()
        if self._bias.shape != (n_out,):
            raise ValueError(f"bias: expected ({n_out},), got {self._bias.shape}")
        self._weight = weight.detach()  # the dense weight (not a copy): transformed again for a new block size
        self._packed: dict[int, Tensor] = {}

    @classmethod
    def from_transposed(cls, weight: Tensor, bias: Tensor | None, *, tile: int = TILE) -> WinogradConv3x3:
        """The transposed convolution (C, O, 5, 5), stride 2, padding 2, output padding 1: output (2H, 2W)."""
        if weight.dim() != 4 or tuple(weight.shape[2:]) != (5, 5):
            raise ValueError(f"weight: expected (C, O, 5, 5), got {tuple(weight.shape)}")
        return cls(weight, bias, tile=tile, _phases=True)

    @property
    def _points(self) -> int:
        return (self.tile + 2) ** 2  # transformed points per tile: 36 or 16

    def _weights(self, block: int) -> Tensor:
        """U = G g Gᵀ as the oneDNN-packed weight of the grouped convolution over `block` tiles (one per size)."""
        if block not in self._packed:
            g = torch.from_numpy(_MATRICES[self.tile]["g"])
            w = _phase_weights(self._weight.double().cpu()) if self.phases else self._weight.double().cpu()
            u = torch.einsum("ik,ockl,jl->ijoc", g, w, g)  # (α, α, O, C)
            u = u.reshape(-1, self.in_channels, 1, 1).float().contiguous(memory_format=torch.channels_last)
            n = self._points
            shape = [1, n * self.in_channels, 1, block]
            self._packed[block] = torch.ops.mkldnn._reorder_convolution_weight(u, [0, 0], [1, 1], [1, 1], n, shape)
        return self._packed[block]

    def _work(self, rows: int, width: int, channels: int) -> np.ndarray:
        return _scratch((rows, 2, self.tile + 2, width, channels))

    @torch.no_grad()
    def __call__(
        self,
        parts: tuple[Tensor, ...],
        other: Tensor | None = None,
        relu: bool = False,
        append: Tensor | None = None,
        post: Tensor | None = None,
    ) -> Tensor:
        """relu?(conv(cat(parts, 1)) + bias + other) + post for (1, Ci, H, W) float32 CPU parts; NHWC (channels_last)
        out, (1, O, H, W), or (1, O, 2H, 2W) from `from_transposed`; `other` and `post` have the output's size.

        `append` (1, A, H', W'), same size as the output: returned as its channels O … O+A−1, so that a consumer of
        cat((out, append), 1) reads one tensor (no concatenation pass)."""
        H, W = parts[0].shape[2:]
        if sum(p.shape[1] for p in parts) != self.in_channels or any(p.shape[0] != 1 for p in parts):
            raise ValueError(f"parts: expected batch 1 and {self.in_channels} channels in all")
        if any(p.shape[2:] != parts[0].shape[2:] for p in parts):
            raise ValueError("parts: expected one height and width")
        n_out, n_in, m, n = self.out_channels, self.in_channels, self.tile, self._points
        scale = 2 if self.phases else 1
        for name, t in (("other", other), ("post", post)):
            if t is not None and tuple(t.shape) != (1, n_out, scale * H, scale * W):
                raise ValueError(f"{name}: expected (1, {n_out}, {scale * H}, {scale * W}), got {tuple(t.shape)}")
        th, tw = -(-H // m), -(-W // m)
        match_torch_threads()
        if n * n_in * scale * scale * n_out * 4 <= _SMALL_WEIGHTS:
            rows = min(th, max(2, numba.get_num_threads()))
        else:
            rows = max(1, min(th, _BLOCK_TILES // tw))
        block = rows * tw
        w = self._weights(block)
        nhwc = tuple(p[0].permute(1, 2, 0).contiguous().numpy() for p in parts)  # (H, W, Ci) views when channels_last
        n_append = 0 if append is None else append.shape[1]
        if append is not None and tuple(append.shape) != (1, n_append, scale * H, scale * W):
            raise ValueError(f"append: expected (1, A, {scale * H}, {scale * W}), got {tuple(append.shape)}")
        out = torch.empty(1, n_out + n_append, scale * H, scale * W, memory_format=torch.channels_last)
        if append is not None:
            out[:, n_out:].copy_(append)
        out_np = out[0].permute(1, 2, 0).numpy()
        other_np, post_np = (
            np.zeros((1, 1, 1), np.float32) if t is None else t[0].permute(1, 2, 0).contiguous().numpy()
            for t in (other, post)
        )
        v = torch.empty(1, 1, block, n * n_in).permute(0, 3, 1, 2)  # logical (1, αα·C, 1, block), NHWC memory
        v_np = v[0, :, 0].permute(1, 0).numpy().reshape(block, n, n_in)
        ops, mats = torch.ops.mkldnn, _MATRICES[m]
        for ty0 in range(0, th, rows):
            k = min(rows, th - ty0)
            _input_transform(nhwc, ty0, k, mats["bt"], self._work(rows, m * tw + 2, n_in), v_np)
            prod = ops._convolution_pointwise(v, w, None, [0, 0], [1, 1], [1, 1], n, "none", [], "")
            prod = prod.contiguous(memory_format=torch.channels_last)
            m_np = prod[0, :, 0].permute(1, 0).numpy().reshape(block, n, scale * scale * n_out)
            has = (other is not None, post is not None)
            _output_transform(m_np, ty0, k, self._bias, other_np, has[0], relu, post_np, has[1], self.phases, out_np)
        return out
