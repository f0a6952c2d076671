"""Post-training weight quantisation: int4 RTN / GPTQ with packed storage, int8 dynamic."""
from .allocation import allocate_group_sizes, group_bits
from .apply import QuantReport, cast_lora_, default_include, merge_lora_, module_bytes, quantize_model, select_linears
from .gptq import HessianAccumulator, gptq_quantize
from .int4 import dequantize, pack_int4, quantize_rtn, unpack_int4
from .int8_dynamic import int8_dynamic_available, quantize_int8_dynamic_
from .kernels import clear_kernel_cache, native_int4_available
from .quant_embedding import QuantEmbedding4
from .quant_embedding8 import QuantEmbedding8
from .quant_linear import KERNELS, QuantLinear4
from .serialization import load_quantized, read_quant_config, read_quant_settings, save_quantized
from .settings import (CALIB_MODES, DEFAULT_INCLUDE, METHODS, GPTQSettings, Int8DynamicSettings, QuantSettings,
                       RTNSettings, quant_settings)

__all__ = [
    "CALIB_MODES", "DEFAULT_INCLUDE", "GPTQSettings", "Int8DynamicSettings", "KERNELS", "METHODS",
    "HessianAccumulator", "QuantEmbedding4", "QuantEmbedding8", "QuantLinear4", "QuantReport", "QuantSettings",
    "RTNSettings", "allocate_group_sizes", "cast_lora_", "clear_kernel_cache", "default_include", "dequantize", "gptq_quantize",
    "group_bits", "int8_dynamic_available", "load_quantized", "merge_lora_", "module_bytes", "native_int4_available", "pack_int4",
    "quantize_int8_dynamic_", "quantize_model", "quant_settings", "quantize_rtn", "read_quant_config",
    "read_quant_settings", "save_quantized", "select_linears", "unpack_int4",
]
