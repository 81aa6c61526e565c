#version 450
// dropout: y[i] = keep(i) ? x[i] * scale : 0 with keep(i) = (dropout_hash(seed, base + i) >> 8) >= threshold, i.e.
// u ≥ p for u = (hash >> 8) / 2²⁴ uniform in [0,1) and threshold = ⌈p·2²⁴⌉, scale = 1/(1 − p). Writes y (may alias x).
// The hash (PCG of Jarzynski & Olano, "Hash Functions for GPU Rendering", 2020) is mirrored in PeftKernelReference.
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Y { float y[]; };

layout(push_constant) uniform Push
{
    uint count;
    uint groups_x;
    uint x_offset, y_offset;   // element offsets inside each binding
    uint base;                 // tensor element index of this piece's first element (low 32 bits)
    uint key;                  // pcg_hash(seed), computed on the host
    uint threshold;            // ⌈p·2²⁴⌉
    float scale;               // 1/(1 − p) rounded to fp32 (0 when p = 1)
} pc;

uint pcg_hash(uint v)
{
    uint state = v * 747796405u + 2891336453u;
    uint word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

void main()
{
    uint i = global_index_2d(pc.groups_x);
    if (i >= pc.count) return;
    uint h = pcg_hash(pcg_hash(pc.base + i) ^ pc.key);
    float v = x[pc.x_offset + i];
    y[pc.y_offset + i] = (h >> 8u) >= pc.threshold ? v * pc.scale : 0.0;
}
