"""DDR layout of activations, weights and per-channel parameters.

Activations (batch 1, C x H x W) are stored in *channel blocks* of ``cb = cfg.channel_block``
channels: block ``c // cb`` is a plane of H x W pixels, row-major, each pixel ``cb`` bytes (one AXI
beat, channels beyond C zero). Hence the byte offset of element (c, y, x) is::

    ((c // cb) * H + y) * W * cb + x * cb + c % cb

A row segment of a column strip (columns x0..x1 of row y, one channel block) is one contiguous
burst, and a channel-wise concatenation of tensors whose channel counts are multiples of ``cb`` is
just adjacent planes: the producers write into the concatenated tensor, nothing is copied.
Values are int8 or uint8 bytes (4-bit activations are stored one per byte, sign-extended).

Weights of a CONV are stored as codes (4-bit: two per byte, low nibble first; two-term: one byte),
in the order ``[oc_block][ic_group][ky][kx][ic_lane][oc_lane]`` where an oc block is ``pe_oc``
output channels and an ic group is ``lanes`` input channels: ``lanes = pe_px`` for the
INPUT_CHANNEL dataflow, ``pe_ic`` for PIXEL and 1 for depthwise (one input channel per output channel).
Missing channels are padded with zero codes. The per-channel table holds, for each output channel
(padded to ``pe_oc``), 8 bytes: int32 bias (little-endian), int8 requantisation shift, 3 zero bytes.
Every tensor, weight block and table starts at a multiple of :data:`ALIGN` bytes.
"""

from __future__ import annotations

import numpy as np

from shiftpu.arch.config import AccelConfig
from shiftpu.arch.isa import Dataflow
from shiftpu.arch.numerics import WeightCode, decode_weights, encode_weights

#: Alignment of every tensor and table in DDR, bytes.
ALIGN = 64
#: Bytes per output channel in the bias/shift table.
QPARAM_BYTES = 8


def align(n: int, a: int = ALIGN) -> int:
    return -(-n // a) * a


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


# -- activations ------------------------------------------------------------------------------------


def activation_bytes(c: int, h: int, w: int, cfg: AccelConfig) -> int:
    """Bytes a C x H x W tensor occupies (not rounded to ALIGN)."""
    return ceil_div(c, cfg.channel_block) * h * w * cfg.channel_block


def activation_offset(c: int, y: int, x: int, h: int, w: int, cfg: AccelConfig) -> int:
    """Byte offset of element (c, y, x) of an H x W tensor from the tensor's start."""
    cb = cfg.channel_block
    return ((c // cb) * h + y) * w * cb + x * cb + c % cb


def channel_block_offset(c0: int, h: int, w: int, cfg: AccelConfig) -> int:
    """Byte offset of the plane holding channel c0 (c0 a multiple of cb): where a concat input goes."""
    if c0 % cfg.channel_block:
        raise ValueError(f"channel offset {c0} is not a multiple of the channel block {cfg.channel_block}")
    return (c0 // cfg.channel_block) * h * w * cfg.channel_block


def pack_activation(t: np.ndarray, cfg: AccelConfig) -> np.ndarray:
    """C x H x W int8/uint8 array -> its DDR bytes (uint8, length activation_bytes)."""
    if t.ndim != 3:
        raise ValueError(f"expected a C x H x W tensor, got shape {t.shape}")
    c, h, w = t.shape
    cb = cfg.channel_block
    nb = ceil_div(c, cb)
    padded = np.zeros((nb * cb, h, w), dtype=np.uint8)
    padded[:c] = t.view(np.uint8) if t.dtype in (np.int8, np.uint8) else t.astype(np.int64).astype(np.uint8)
    return padded.reshape(nb, cb, h, w).transpose(0, 2, 3, 1).reshape(-1).copy()


def unpack_activation(buf: np.ndarray, c: int, h: int, w: int, signed: bool, cfg: AccelConfig) -> np.ndarray:
    """DDR bytes -> C x H x W int8 (signed) or uint8 array."""
    cb = cfg.channel_block
    nb = ceil_div(c, cb)
    raw = np.asarray(buf, dtype=np.uint8)[: nb * h * w * cb].reshape(nb, h, w, cb)
    t = raw.transpose(0, 3, 1, 2).reshape(nb * cb, h, w)[:c]
    return t.view(np.int8).copy() if signed else t.copy()


# -- weights ----------------------------------------------------------------------------------------


def weight_lanes(dataflow: Dataflow, cfg: AccelConfig) -> int:
    """Input channels per weight group (read together in one cycle): pe_px for INPUT_CHANNEL, pe_ic for PIXEL,
    1 for DEPTHWISE."""
    if dataflow is Dataflow.INPUT_CHANNEL:
        return cfg.pe_px
    return cfg.pe_ic if dataflow is Dataflow.PIXEL else 1


def weight_geometry(oc: int, icg: int, kh: int, kw: int, dataflow: Dataflow, cfg: AccelConfig):
    """(oc blocks, ic groups, lanes) of a weight tensor of OC x ICg x KH x KW (ICg = in channels per group)."""
    lanes = weight_lanes(dataflow, cfg)
    return ceil_div(oc, cfg.pe_oc), ceil_div(icg, lanes), lanes


def weight_bytes(oc: int, icg: int, kh: int, kw: int, dataflow: Dataflow, cfg: AccelConfig) -> int:
    nob, nig, lanes = weight_geometry(oc, icg, kh, kw, dataflow, cfg)
    codes = nob * nig * kh * kw * lanes * cfg.pe_oc
    return ceil_div(codes * cfg.weight_code.bits, 8)


def pack_weights(w: np.ndarray, dataflow: Dataflow, cfg: AccelConfig) -> np.ndarray:
    """Integer weights OC x ICg x KH x KW (ICg = 1 for depthwise) -> DDR bytes in the dataflow's order."""
    oc, icg, kh, kw = w.shape
    nob, nig, lanes = weight_geometry(oc, icg, kh, kw, dataflow, cfg)
    full = np.zeros((nob * cfg.pe_oc, nig * lanes, kh, kw), dtype=np.int64)
    full[:oc, :icg] = w
    # [oc_blk, oc_lane, ic_grp, ic_lane, ky, kx] -> [oc_blk, ic_grp, ky, kx, ic_lane, oc_lane]
    arranged = full.reshape(nob, cfg.pe_oc, nig, lanes, kh, kw).transpose(0, 2, 4, 5, 3, 1).reshape(-1)
    codes = encode_weights(arranged, cfg.weight_code)
    if cfg.weight_code is WeightCode.SHIFT4:
        if codes.size % 2:
            codes = np.append(codes, np.uint8(0))
        return (codes[0::2] | (codes[1::2] << 4)).astype(np.uint8)
    return codes


def unpack_weights(
    buf: np.ndarray, oc: int, icg: int, kh: int, kw: int, dataflow: Dataflow, cfg: AccelConfig
) -> np.ndarray:
    """DDR bytes -> integer weights OC x ICg x KH x KW (int32). Raises on an illegal code."""
    nob, nig, lanes = weight_geometry(oc, icg, kh, kw, dataflow, cfg)
    n = nob * nig * kh * kw * lanes * cfg.pe_oc
    raw = np.asarray(buf, dtype=np.uint8)
    if cfg.weight_code is WeightCode.SHIFT4:
        raw = raw[: ceil_div(n, 2)]
        codes = np.stack([raw & 0xF, raw >> 4], axis=1).reshape(-1)[:n]
    else:
        codes = raw[:n]
    vals = decode_weights(codes, cfg.weight_code)
    full = vals.reshape(nob, nig, kh, kw, lanes, cfg.pe_oc).transpose(0, 5, 1, 4, 2, 3)
    return full.reshape(nob * cfg.pe_oc, nig * lanes, kh, kw)[:oc, :icg].astype(np.int32)


# -- per-channel bias and shift -----------------------------------------------------------------------


def qparam_bytes(oc: int, cfg: AccelConfig) -> int:
    return ceil_div(oc, cfg.pe_oc) * cfg.pe_oc * QPARAM_BYTES


def pack_qparams(bias: np.ndarray, shift: np.ndarray, cfg: AccelConfig) -> np.ndarray:
    """int32 bias and int8 shift per output channel -> DDR bytes."""
    oc = len(bias)
    n = ceil_div(oc, cfg.pe_oc) * cfg.pe_oc
    rec = np.zeros(n, dtype=[("bias", "<i4"), ("shift", "i1"), ("pad", "V3")])
    rec["bias"][:oc] = bias
    rec["shift"][:oc] = shift
    return rec.view(np.uint8).copy()


def unpack_qparams(buf: np.ndarray, oc: int) -> tuple[np.ndarray, np.ndarray]:
    """DDR bytes -> (bias int32, shift int8) per output channel."""
    rec = np.asarray(buf, dtype=np.uint8)[: oc * QPARAM_BYTES].view(
        np.dtype([("bias", "<i4"), ("shift", "i1"), ("pad", "V3")])
    )
    return rec["bias"].astype(np.int32), rec["shift"].astype(np.int8)
