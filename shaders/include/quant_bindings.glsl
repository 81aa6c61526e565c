// The four bindings of a quantized weight (the layout include/quant.glsl decodes), starting at binding
// QUANT_FIRST_BINDING, which the includer defines: packed codes, scales (uint double-quantized codes with QDQ), the
// auxiliary array (nested absmax or INT4 minimums) and the 256-entry dynamic map.
#ifndef VKPEFT_QUANT_BINDINGS_GLSL
#define VKPEFT_QUANT_BINDINGS_GLSL

#ifndef QUANT_FIRST_BINDING
#error "define QUANT_FIRST_BINDING before including quant_bindings.glsl"
#endif

layout(std430, set = 0, binding = QUANT_FIRST_BINDING) readonly buffer QCodes { uint qcodes[]; };
#ifdef QDQ
layout(std430, set = 0, binding = QUANT_FIRST_BINDING + 1) readonly buffer QScale { uint qscale[]; };
#else
layout(std430, set = 0, binding = QUANT_FIRST_BINDING + 1) readonly buffer QScale { float qscale[]; };
#endif
layout(std430, set = 0, binding = QUANT_FIRST_BINDING + 2) readonly buffer QAux { float qaux[]; };
layout(std430, set = 0, binding = QUANT_FIRST_BINDING + 3) readonly buffer QMap { float qmap[]; };

#endif
