#version 450
// axpy: y[i] += alpha · x[i]. Accumulates y (x may alias y).
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) buffer Y { float y[]; };

layout(push_constant) uniform Push
{
    uint count;
    uint groups_x;
    float alpha;
    uint x_offset, y_offset;   // element offsets inside each binding
} pc;

void main()
{
    uint i = global_index_2d(pc.groups_x);
    if (i >= pc.count) return;
    y[pc.y_offset + i] += pc.alpha * x[pc.x_offset + i];
}
