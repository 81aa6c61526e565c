#version 450
// elementwise: c[i] = a[i] + b[i] (OP 0), a[i] * b[i] (OP 1), alpha * a[i] + beta (OP 2, b unused).
// Writes c; c may alias a or b (each element is read before it is written by the same invocation).
#include "common.glsl"

layout(constant_id = 1) const uint OP = 0;

layout(std430, set = 0, binding = 0) readonly buffer A { float a[]; };
layout(std430, set = 0, binding = 1) readonly buffer B { float b[]; };
layout(std430, set = 0, binding = 2) writeonly buffer C { float c[]; };

layout(push_constant) uniform Push
{
    uint count;
    uint groups_x;
    float alpha;
    float beta;
    uint a_offset, b_offset, c_offset;   // element offsets inside each binding
} pc;

void main()
{
    uint i = global_index_2d(pc.groups_x);
    if (i >= pc.count) return;
    float x = a[pc.a_offset + i];
    uint o = pc.c_offset + i;
    if (OP == 0) c[o] = x + b[pc.b_offset + i];
    else if (OP == 1) c[o] = x * b[pc.b_offset + i];
    else c[o] = pc.alpha * x + pc.beta;
}
