#version 450
// lora_gathered: the LoRA branch of a batch whose rows use different adapters (S-LoRA's gathered shrink and expand).
// Every row m names its adapter a_m (or −1: no adapter); the adapters' matrices sit in pools padded to rank R.
// Shrink (default): t[m,k] = Σ_i A[a_m,k,i]·x[m,i] for k < R, one invocation per (m,k), summed in order of i; rows
// with a_m < 0 get t = 0. With -DEXPAND: y[m,o] += scale[m]·Σ_k B[a_m,o,k]·t[m,k], one invocation per (m,o), summed
// in order of k, with each row's own scale (its adapter's scaling times its request's); rows with a_m < 0 are not
// touched. Writes t, or adds to y.
#include "common.glsl"

#ifdef EXPAND
layout(std430, set = 0, binding = 0) readonly buffer T { float t[]; };
layout(std430, set = 0, binding = 1) readonly buffer W { float b[]; };        // [adapters, N, R]
layout(std430, set = 0, binding = 2) readonly buffer Rows { int adapter[]; };  // [M]
layout(std430, set = 0, binding = 3) readonly buffer Scale { float scale[]; }; // [M]
layout(std430, set = 0, binding = 4) buffer Y { float y[]; };
#else
layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer W { float a[]; };        // [adapters, R, K]
layout(std430, set = 0, binding = 2) readonly buffer Rows { int adapter[]; };  // [M]
layout(std430, set = 0, binding = 3) writeonly buffer T { float t[]; };
#endif

layout(push_constant) uniform Push
{
    uint count;      // outputs: M·R (shrink) or M·N (expand)
    uint groups_x;
    uint rank;       // R (padded rank of the pools)
    uint cols;       // K (shrink: in-features) or N (expand: out-features)
    uint in_offset, w_offset, rows_offset, scale_offset, out_offset;
} pc;

void main()
{
    uint i = global_index_2d(pc.groups_x);
    if (i >= pc.count) return;
#ifdef EXPAND
    uint m = i / pc.cols, o = i % pc.cols;
    int ad = adapter[pc.rows_offset + m];
    if (ad < 0) return;
    uint w = pc.w_offset + (uint(ad) * pc.cols + o) * pc.rank;
    uint tr = pc.in_offset + m * pc.rank;
    float s = 0.0;
    for (uint k = 0; k < pc.rank; k++) s += b[w + k] * t[tr + k];
    y[pc.out_offset + i] += scale[pc.scale_offset + m] * s;
#else
    uint m = i / pc.rank, k = i % pc.rank;
    int ad = adapter[pc.rows_offset + m];
    float s = 0.0;
    if (ad >= 0)
    {
        uint w = pc.w_offset + (uint(ad) * pc.rank + k) * pc.cols;
        uint xr = pc.in_offset + m * pc.cols;
        for (uint j = 0; j < pc.cols; j++) s += a[w + j] * x[xr + j];
    }
    t[pc.out_offset + i] = s;
#endif
}
