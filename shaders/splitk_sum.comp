#version 450
// splitk_sum: C[i] = alpha · Σ_{s < splits} P[s·p_stride + i] + beta · C[i] for i < count, the partials summed in s order:
// the second pass of a split-K product (each split wrote its own partial product; no float atomics, so the result is
// the same bit for bit on every run). C is not read when beta == 0.
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer P { float p[]; };
layout(std430, set = 0, binding = 1) buffer C { float c[]; };

layout(push_constant) uniform Push
{
    uint count;
    uint groups_x;
    uint splits;
    uint p_stride;             // elements from one partial to the next (≥ count)
    uint p_offset, c_offset;   // element offsets inside each binding
    float alpha, beta;
} pc;

void main()
{
    uint i = global_index_2d(pc.groups_x);
    if (i >= pc.count) return;
    float sum = 0.0;
    for (uint s = 0u; s < pc.splits; s++) sum += p[pc.p_offset + s * pc.p_stride + i];
    float v = pc.alpha * sum;
    if (pc.beta != 0.0) v += pc.beta * c[pc.c_offset + i];
    c[pc.c_offset + i] = v;
}
