/*
 * JNI shim over LiteRT's C API (CompiledModel, CPU), so JVM tests run an exported .tflite
 * through the same Java preprocessing the Android app uses. Test-only: the app uses LiteRT's
 * own Kotlin API.
 *
 * The pip wheel ai-edge-litert ships libLiteRt.so without headers, so the few functions used
 * here are declared below, pinned to LiteRT 2.3.0 (the C API changed at 2.2: e.g.
 * LiteRtCreateModelFromFile gained a leading environment argument). The argument lists of
 * LiteRtCreateModelFromFile and LiteRtCreateTensorBufferFromHostMemory were checked against the
 * 2.3.0 binary's machine code; LiteRtRankedTensorType follows the 2.x public header
 * (LiteRtLayout is 68 bytes: rank:7 + has_strides:1 bit-fields, int32 dims[8], uint32 strides[8]).
 */
#include <jni.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- LiteRT 2.3.0 C API subset ---- */
typedef int LiteRtStatus; /* kLiteRtStatusOk == 0 */
typedef size_t LiteRtParamIndex;
typedef struct LiteRtEnvironmentT *LiteRtEnvironment;
typedef struct LiteRtModelT *LiteRtModel;
typedef struct LiteRtSignatureT *LiteRtSignature;
typedef struct LiteRtTensorT *LiteRtTensor;
typedef struct LiteRtOptionsT *LiteRtOptions;
typedef struct LiteRtCompiledModelT *LiteRtCompiledModel;
typedef struct LiteRtTensorBufferT *LiteRtTensorBuffer;
typedef struct LiteRtTensorBufferRequirementsT *LiteRtTensorBufferRequirements;
typedef void (*LiteRtHostMemoryDeallocator)(void *addr);

enum { kLiteRtElementTypeFloat32 = 1 };
enum { kLiteRtHwAcceleratorCpu = 1 << 0 };
#define LITERT_TENSOR_MAX_RANK 8
#define LITERT_HOST_MEMORY_BUFFER_ALIGNMENT 64

typedef struct {
    unsigned int rank : 7;
    unsigned int has_strides : 1;
    int32_t dimensions[LITERT_TENSOR_MAX_RANK];
    uint32_t strides[LITERT_TENSOR_MAX_RANK];
} LiteRtLayout;

typedef struct {
    int element_type;
    LiteRtLayout layout;
} LiteRtRankedTensorType;

LiteRtStatus LiteRtCreateEnvironment(int num_options, const void *options, LiteRtEnvironment *environment);
void LiteRtDestroyEnvironment(LiteRtEnvironment environment);
LiteRtStatus LiteRtCreateModelFromFile(LiteRtEnvironment environment, const char *filename, LiteRtModel *model);
void LiteRtDestroyModel(LiteRtModel model);
LiteRtStatus LiteRtGetModelSignature(LiteRtModel model, LiteRtParamIndex index, LiteRtSignature *signature);
LiteRtStatus LiteRtGetNumSignatureInputs(LiteRtSignature signature, LiteRtParamIndex *count);
LiteRtStatus LiteRtGetNumSignatureOutputs(LiteRtSignature signature, LiteRtParamIndex *count);
LiteRtStatus LiteRtGetSignatureInputTensorByIndex(LiteRtSignature signature, LiteRtParamIndex index,
                                                  LiteRtTensor *tensor);
LiteRtStatus LiteRtGetSignatureOutputTensorByIndex(LiteRtSignature signature, LiteRtParamIndex index,
                                                   LiteRtTensor *tensor);
LiteRtStatus LiteRtGetRankedTensorType(LiteRtTensor tensor, LiteRtRankedTensorType *type);
LiteRtStatus LiteRtCreateOptions(LiteRtOptions *options);
void LiteRtDestroyOptions(LiteRtOptions options);
LiteRtStatus LiteRtSetOptionsHardwareAccelerators(LiteRtOptions options, int accelerators);
LiteRtStatus LiteRtCreateCompiledModel(LiteRtEnvironment environment, LiteRtModel model, LiteRtOptions options,
                                       LiteRtCompiledModel *compiled_model);
void LiteRtDestroyCompiledModel(LiteRtCompiledModel compiled_model);
LiteRtStatus LiteRtCreateTensorBufferFromHostMemory(const LiteRtRankedTensorType *type, void *host_addr,
                                                    size_t size, LiteRtHostMemoryDeallocator deallocator,
                                                    LiteRtTensorBuffer *buffer);
void LiteRtDestroyTensorBuffer(LiteRtTensorBuffer buffer);
LiteRtStatus LiteRtRunCompiledModel(LiteRtCompiledModel compiled_model, LiteRtParamIndex signature_index,
                                    size_t num_inputs, LiteRtTensorBuffer *inputs, size_t num_outputs,
                                    LiteRtTensorBuffer *outputs);

/* ---- engine ---- */
typedef struct {
    LiteRtEnvironment environment;
    LiteRtModel model;
    LiteRtOptions options;
    LiteRtCompiledModel compiled;
    LiteRtRankedTensorType input_type;
    LiteRtRankedTensorType output_type;
    size_t input_count;
    size_t output_count;
    float *input_memory;
    float *output_memory;
    LiteRtTensorBuffer input_buffer;
    LiteRtTensorBuffer output_buffer;
} Engine;

static void throw_error(JNIEnv *env, const char *message) {
    jclass type = (*env)->FindClass(env, "java/lang/IllegalStateException");
    if (type != NULL) {
        (*env)->ThrowNew(env, type, message);
    }
}

static void destroy_engine(Engine *engine) {
    if (engine->input_buffer) LiteRtDestroyTensorBuffer(engine->input_buffer);
    if (engine->output_buffer) LiteRtDestroyTensorBuffer(engine->output_buffer);
    if (engine->compiled) LiteRtDestroyCompiledModel(engine->compiled);
    if (engine->options) LiteRtDestroyOptions(engine->options);
    if (engine->model) LiteRtDestroyModel(engine->model);
    if (engine->environment) LiteRtDestroyEnvironment(engine->environment);
    free(engine->input_memory);
    free(engine->output_memory);
    free(engine);
}

/* Number of elements of a static float32 tensor, or 0 (with *error set) if unsupported. */
static size_t element_count(const LiteRtRankedTensorType *type, const char *what, char *error, size_t error_size) {
    if (type->element_type != kLiteRtElementTypeFloat32) {
        snprintf(error, error_size, "%s tensor has element type %d, the demo needs float32 (1)", what,
                 type->element_type);
        return 0;
    }
    size_t count = 1;
    for (unsigned int i = 0; i < type->layout.rank; i++) {
        if (type->layout.dimensions[i] <= 0) {
            snprintf(error, error_size, "%s tensor dimension %u is dynamic (%d)", what, i,
                     type->layout.dimensions[i]);
            return 0;
        }
        count *= (size_t)type->layout.dimensions[i];
    }
    return count;
}

static float *aligned_floats(size_t count) {
    size_t bytes = count * sizeof(float);
    size_t rounded = (bytes + LITERT_HOST_MEMORY_BUFFER_ALIGNMENT - 1) / LITERT_HOST_MEMORY_BUFFER_ALIGNMENT *
                     LITERT_HOST_MEMORY_BUFFER_ALIGNMENT;
    return aligned_alloc(LITERT_HOST_MEMORY_BUFFER_ALIGNMENT, rounded);
}

#define CHECK(call, step)                                                                       \
    do {                                                                                        \
        LiteRtStatus status_ = (call);                                                          \
        if (status_ != 0) {                                                                     \
            snprintf(error, sizeof(error), "LiteRT %s failed with status %d for %s", step,      \
                     status_, path);                                                            \
            goto fail;                                                                          \
        }                                                                                       \
    } while (0)

JNIEXPORT jlong JNICALL Java_org_facekd_core_host_HostLiteRtEngine_nativeOpen(JNIEnv *env, jclass cls,
                                                                            jstring model_path) {
    (void)cls;
    char error[512] = {0};
    const char *path = (*env)->GetStringUTFChars(env, model_path, NULL);
    if (path == NULL) return 0;
    Engine *engine = calloc(1, sizeof(Engine));
    LiteRtSignature signature = NULL;
    LiteRtTensor tensor = NULL;
    LiteRtParamIndex inputs = 0, outputs = 0;
    if (engine == NULL) {
        snprintf(error, sizeof(error), "out of memory");
        goto fail;
    }
    CHECK(LiteRtCreateEnvironment(0, NULL, &engine->environment), "CreateEnvironment");
    CHECK(LiteRtCreateModelFromFile(engine->environment, path, &engine->model), "CreateModelFromFile");
    CHECK(LiteRtGetModelSignature(engine->model, 0, &signature), "GetModelSignature");
    CHECK(LiteRtGetNumSignatureInputs(signature, &inputs), "GetNumSignatureInputs");
    CHECK(LiteRtGetNumSignatureOutputs(signature, &outputs), "GetNumSignatureOutputs");
    if (inputs != 1 || outputs != 1) {
        snprintf(error, sizeof(error), "%s has %zu inputs and %zu outputs; a face model has one of each", path,
                 inputs, outputs);
        goto fail;
    }
    CHECK(LiteRtGetSignatureInputTensorByIndex(signature, 0, &tensor), "GetSignatureInputTensorByIndex");
    CHECK(LiteRtGetRankedTensorType(tensor, &engine->input_type), "GetRankedTensorType(input)");
    CHECK(LiteRtGetSignatureOutputTensorByIndex(signature, 0, &tensor), "GetSignatureOutputTensorByIndex");
    CHECK(LiteRtGetRankedTensorType(tensor, &engine->output_type), "GetRankedTensorType(output)");
    engine->input_count = element_count(&engine->input_type, "input", error, sizeof(error));
    if (engine->input_count == 0) goto fail;
    engine->output_count = element_count(&engine->output_type, "output", error, sizeof(error));
    if (engine->output_count == 0) goto fail;

    CHECK(LiteRtCreateOptions(&engine->options), "CreateOptions");
    CHECK(LiteRtSetOptionsHardwareAccelerators(engine->options, kLiteRtHwAcceleratorCpu),
          "SetOptionsHardwareAccelerators");
    CHECK(LiteRtCreateCompiledModel(engine->environment, engine->model, engine->options, &engine->compiled),
          "CreateCompiledModel");

    engine->input_memory = aligned_floats(engine->input_count);
    engine->output_memory = aligned_floats(engine->output_count);
    if (engine->input_memory == NULL || engine->output_memory == NULL) {
        snprintf(error, sizeof(error), "out of memory");
        goto fail;
    }
    CHECK(LiteRtCreateTensorBufferFromHostMemory(&engine->input_type, engine->input_memory,
                                                 engine->input_count * sizeof(float), NULL, &engine->input_buffer),
          "CreateTensorBufferFromHostMemory(input)");
    CHECK(LiteRtCreateTensorBufferFromHostMemory(&engine->output_type, engine->output_memory,
                                                 engine->output_count * sizeof(float), NULL,
                                                 &engine->output_buffer),
          "CreateTensorBufferFromHostMemory(output)");
    (*env)->ReleaseStringUTFChars(env, model_path, path);
    return (jlong)(intptr_t)engine;

fail:
    if (engine != NULL) destroy_engine(engine);
    (*env)->ReleaseStringUTFChars(env, model_path, path);
    throw_error(env, error);
    return 0;
}

static jintArray dims_array(JNIEnv *env, const LiteRtRankedTensorType *type) {
    jint dims[LITERT_TENSOR_MAX_RANK];
    jsize rank = (jsize)type->layout.rank;
    for (jsize i = 0; i < rank; i++) dims[i] = type->layout.dimensions[i];
    jintArray out = (*env)->NewIntArray(env, rank);
    if (out != NULL) (*env)->SetIntArrayRegion(env, out, 0, rank, dims);
    return out;
}

JNIEXPORT jintArray JNICALL Java_org_facekd_core_host_HostLiteRtEngine_nativeInputShape(JNIEnv *env, jclass cls,
                                                                                      jlong handle) {
    (void)cls;
    return dims_array(env, &((Engine *)(intptr_t)handle)->input_type);
}

JNIEXPORT jintArray JNICALL Java_org_facekd_core_host_HostLiteRtEngine_nativeOutputShape(JNIEnv *env, jclass cls,
                                                                                       jlong handle) {
    (void)cls;
    return dims_array(env, &((Engine *)(intptr_t)handle)->output_type);
}

JNIEXPORT jfloatArray JNICALL Java_org_facekd_core_host_HostLiteRtEngine_nativeRun(JNIEnv *env, jclass cls,
                                                                                 jlong handle, jfloatArray input) {
    (void)cls;
    Engine *engine = (Engine *)(intptr_t)handle;
    char error[256];
    jsize length = (*env)->GetArrayLength(env, input);
    if ((size_t)length != engine->input_count) {
        snprintf(error, sizeof(error), "input has %d floats, the model takes %zu", (int)length, engine->input_count);
        throw_error(env, error);
        return NULL;
    }
    (*env)->GetFloatArrayRegion(env, input, 0, length, engine->input_memory);
    LiteRtStatus status =
        LiteRtRunCompiledModel(engine->compiled, 0, 1, &engine->input_buffer, 1, &engine->output_buffer);
    if (status != 0) {
        snprintf(error, sizeof(error), "LiteRT RunCompiledModel failed with status %d", status);
        throw_error(env, error);
        return NULL;
    }
    jfloatArray out = (*env)->NewFloatArray(env, (jsize)engine->output_count);
    if (out != NULL) (*env)->SetFloatArrayRegion(env, out, 0, (jsize)engine->output_count, engine->output_memory);
    return out;
}

JNIEXPORT void JNICALL Java_org_facekd_core_host_HostLiteRtEngine_nativeClose(JNIEnv *env, jclass cls,
                                                                            jlong handle) {
    (void)env;
    (void)cls;
    destroy_engine((Engine *)(intptr_t)handle);
}
