#version 450
// rope: rotates every pair (a, b) of each head of x[t, :] by θ = sign · pos · inv_freq[i], pos = start_pos + (t mod seq_len):
// y[a] = x[a]·cos θ − x[b]·sin θ, y[b] = x[a]·sin θ + x[b]·cos θ. Pairs are (2i, 2i+1) (interleaved, llama2.c/Meta) or
// (i, i + hd/2) (rotate-half, HF) by spec constant 1. sign = −1 is the backward pass. Writes y (may alias x).
// pos·inv_freq is formed exactly (two-product) and reduced mod 2π in three parts before sin/cos: large positions stay accurate.
#include "common.glsl"

layout(constant_id = 1) const uint ROTATE_HALF = 0;

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer F { float inv_freq[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Y { float y[]; };

layout(push_constant) uniform Push
{
    uint tokens;      // rows in this dispatch
    uint row_elems;   // heads · head_dim
    uint half_hd;     // head_dim / 2
    uint groups_x;
    uint start_pos;
    uint seq_len;     // positions restart every seq_len rows (0: never)
    uint t_start;     // index of this dispatch's first row in the whole tensor
    float sign;
    uint x_offset, y_offset, f_offset;   // element offsets inside each binding
} pc;

void main()
{
    uint g = global_index_2d(pc.groups_x);
    uint half_row = pc.row_elems / 2;
    if (g >= pc.tokens * half_row) return;
    uint t = g / half_row, p = g - t * half_row;
    uint head = p / pc.half_hd, i = p - head * pc.half_hd;
    uint tt = pc.t_start + t;
    uint pos = pc.start_pos + (pc.seq_len != 0 ? tt % pc.seq_len : tt);

    // Exact product pos·f = hi + lo by Dekker's two-product with exact 12-bit splits (no reliance on a fused fma,
    // which some drivers lower to a multiply and an add): pos < 2^24 splits by bits, f by masking its significand.
    float f = inv_freq[pc.f_offset + i];
    float p_hi = float(pos & 0xfff000u), p_lo = float(pos & 0xfffu);
    float f_hi = uintBitsToFloat(floatBitsToUint(f) & 0xfffff000u);
    precise float f_lo = f - f_hi;
    precise float hi = float(pos) * f;
    precise float lo = ((p_hi * f_hi - hi) + p_hi * f_lo + p_lo * f_hi) + p_lo * f_lo;
    // Reduce mod 2π with 2π split in three parts (6.28125 has 8 significant bits, so k·6.28125 is exact for k < 2^16).
    precise float k = round(hi * 0.15915494309189535);
    precise float r = ((hi - k * 6.28125) - k * 0.0019353071693331003) - k * 1.0253376273028358e-11 + lo;
    float c = cos(r), s = pc.sign * sin(r);

    uint base = t * pc.row_elems + head * 2 * pc.half_hd;
    uint a = ROTATE_HALF != 0 ? base + i : base + 2 * i;
    uint b = ROTATE_HALF != 0 ? a + pc.half_hd : a + 1;
    float x0 = x[pc.x_offset + a], x1 = x[pc.x_offset + b];
    y[pc.y_offset + a] = x0 * c - x1 * s;
    y[pc.y_offset + b] = x0 * s + x1 * c;
}
