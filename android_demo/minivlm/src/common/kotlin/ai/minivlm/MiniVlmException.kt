package ai.minivlm

/** What went wrong, mirroring the native core's `mvlm_status` codes (sdk/native/include/minivlm/minivlm.h). */
enum class ErrorKind(val status: Int) {
    INVALID_ARGUMENT(1), // a size, index or shape that does not fit (a caller bug)
    BAD_INPUT(2),        // malformed user data: bad UTF-8, zero-size image, non-finite values
    BAD_FILE(3),         // malformed vocab.txt / JSON / manifest
    IO_ERROR(4),
    BUFFER_TOO_SMALL(5),
    CALLBACK_FAILED(6),  // the caption step graph failed
    OUT_OF_MEMORY(7),
    INTERNAL(8),
    CONFIG(100),         // Kotlin side: a build folder that does not match what the app needs
    RUNTIME(101);        // Kotlin side: a graph runtime (ExecuTorch / LiteRT) failed

    companion object {
        fun of(status: Int): ErrorKind = entries.firstOrNull { it.status == status } ?: INTERNAL
    }
}

/**
 * The one exception type of the library. The JNI bridge throws it for every non-OK core status, with the
 * core's message (`mvlm_last_error`), so malformed input surfaces as this exception and never as a crash.
 */
class MiniVlmException(val kind: ErrorKind, message: String, cause: Throwable? = null) : RuntimeException(message, cause) {
    /** Called from the JNI bridge: `status` is an `mvlm_status`. */
    constructor(status: Int, message: String) : this(ErrorKind.of(status), message)

    override fun toString(): String = "MiniVlmException(${kind.name}): $message"
}
