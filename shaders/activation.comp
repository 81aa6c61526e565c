#version 450
// activation: y = f(x) for f = ReLU (KIND 0), SiLU x·σ(x) (KIND 1), GELU tanh approximation (KIND 2), tanh (KIND 3)
// 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) evaluated as x·σ(2z); with -DBACKWARD: dx = dy · f′(x).
// Writes y (may alias x) or dx (may alias dy): each invocation reads its element before writing it.
#include "common.glsl"

layout(constant_id = 1) const uint KIND = 0;

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
#ifdef BACKWARD
layout(std430, set = 0, binding = 1) readonly buffer Dy { float dy[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Dx { float dx[]; };
#else
layout(std430, set = 0, binding = 1) writeonly buffer Y { float y[]; };
#endif

layout(push_constant) uniform Push
{
    uint count;
    uint groups_x;
    uint x_offset, out_offset, dy_offset;   // element offsets inside each binding (dy_offset: backward only)
} pc;

const float GELU_C = 0.7978845608028654;   // √(2/π)
const float GELU_A = 0.044715;

// σ(t) and 1 − σ(t), the latter without cancellation: e·σ(t) for t ≥ 0 (e = exp(−t) ≤ 1), 1 − σ(t) for t < 0 (σ ≤ ½).
void sigmoid2(float t, out float s, out float oms)
{
    float e = exp(-t);
    s = 1.0 / (1.0 + e);
    oms = t >= 0.0 ? e * s : 1.0 - s;
}

// tanh from e = exp(−2|x|) ≤ 1: sign(x)·(1 − e)/(1 + e) and tanh′ = 1 − tanh² = 4e/(1 + e)², the latter without the
// cancellation of 1 − tanh² near ±1 (GLSL's tanh has no stated precision of its own).
float tanh_value(float v)
{
    float e = exp(-2.0 * abs(v));
    float t = (1.0 - e) / (1.0 + e);
    return v < 0.0 ? -t : t;
}

float tanh_derivative(float v)
{
    float e = exp(-2.0 * abs(v));
    float q = 1.0 + e;
    return 4.0 * e / (q * q);
}

float forward_value(float v)
{
    if (KIND == 0) return max(v, 0.0);
    if (KIND == 3) return tanh_value(v);
    float s, oms;
    if (KIND == 1) { sigmoid2(v, s, oms); return v * s; }
    float z2 = 2.0 * GELU_C * (v + GELU_A * v * v * v);
    sigmoid2(z2, s, oms);
    return v * s;
}

float derivative(float v)
{
    if (KIND == 0) return v > 0.0 ? 1.0 : 0.0;
    if (KIND == 3) return tanh_derivative(v);
    float s, oms;
    if (KIND == 1) { sigmoid2(v, s, oms); return s + v * s * oms; }         // σ·(1 + x·(1 − σ))
    float z2 = 2.0 * GELU_C * (v + GELU_A * v * v * v);
    sigmoid2(z2, s, oms);
    if (s == 0.0) return 0.0;                                                 // far left tail (dz2 may overflow)
    float dz2 = 2.0 * GELU_C * (1.0 + 3.0 * GELU_A * v * v);
    return s + v * s * oms * dz2;                                             // d/dx [x·σ(2z)]
}

void main()
{
    uint i = global_index_2d(pc.groups_x);
    if (i >= pc.count) return;
    float v = x[pc.x_offset + i];
#ifdef BACKWARD
    float g = dy[pc.dy_offset + i];
    dx[pc.out_offset + i] = g * derivative(v);
#else
    y[pc.out_offset + i] = forward_value(v);
#endif
}
