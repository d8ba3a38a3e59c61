/* arch.c — the registry of supported architectures. */
#include "model/arch.h"

#include <string.h>

extern const moec_arch moec_arch_mixtral, moec_arch_qwen2_moe, moec_arch_qwen3_moe, moec_arch_olmoe;

static const moec_arch *const archs[] = {&moec_arch_mixtral, &moec_arch_qwen2_moe, &moec_arch_qwen3_moe,
                                         &moec_arch_olmoe};

const moec_arch *moec_arch_find(const char *model_type) {
    for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++)
        if (!strcmp(archs[i]->model_type, model_type)) return archs[i];
    return NULL;
}

const char *moec_arch_list(void) { return "mixtral, qwen2_moe, qwen3_moe, olmoe"; }
