package ai.minivlm

/**
 * A small strict JSON reader (RFC 8259) for manifest.json, vocabularies.json and the golden index.
 *
 * Platform-independent on purpose: the same file compiles for Android and for the plain-JVM golden test,
 * so it cannot use org.json (Android only). Objects become `Map<String, Any?>` (key order kept), arrays
 * `List<Any?>`, numbers `Long` when integral and `Double` otherwise. Malformed text raises
 * [MiniVlmException] with the character offset, never a crash or a partial value.
 */
object Json {
    fun parse(text: String): Any? {
        val reader = Reader(text)
        reader.skipSpace()
        val value = reader.value(depth = 0)
        reader.skipSpace()
        if (!reader.atEnd()) reader.fail("unexpected text after the JSON value")
        return value
    }

    /** Parse and require a top-level object. */
    @Suppress("UNCHECKED_CAST") // obj() builds only Map<String, Any?>
    fun parseObject(text: String, what: String): Map<String, Any?> =
        parse(text) as? Map<String, Any?> ?: throw MiniVlmException(ErrorKind.BAD_FILE, "$what is not a JSON object")

    private const val MAX_DEPTH = 64 // manifests nest ~6 deep; a bound keeps hostile input off the stack

    private class Reader(val s: String) {
        var i = 0

        fun atEnd() = i >= s.length

        fun fail(why: String): Nothing = throw MiniVlmException(ErrorKind.BAD_FILE, "malformed JSON at offset $i: $why")

        fun skipSpace() {
            while (i < s.length && (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t')) i++
        }

        fun value(depth: Int): Any? {
            if (depth > MAX_DEPTH) fail("nested deeper than $MAX_DEPTH")
            if (atEnd()) fail("unexpected end of input")
            return when (val c = s[i]) {
                '{' -> obj(depth)
                '[' -> array(depth)
                '"' -> string()
                't' -> literal("true", true)
                'f' -> literal("false", false)
                'n' -> literal("null", null)
                else -> if (c == '-' || c in '0'..'9') number() else fail("unexpected character '$c'")
            }
        }

        fun literal(word: String, v: Any?): Any? {
            if (!s.startsWith(word, i)) fail("expected '$word'")
            i += word.length
            return v
        }

        fun obj(depth: Int): Map<String, Any?> {
            i++ // {
            val out = LinkedHashMap<String, Any?>()
            skipSpace()
            if (!atEnd() && s[i] == '}') { i++; return out }
            while (true) {
                skipSpace()
                if (atEnd() || s[i] != '"') fail("expected a string key")
                val key = string()
                skipSpace()
                if (atEnd() || s[i] != ':') fail("expected ':'")
                i++
                skipSpace()
                out[key] = value(depth + 1)
                skipSpace()
                if (atEnd()) fail("unterminated object")
                when (s[i]) {
                    ',' -> i++
                    '}' -> { i++; return out }
                    else -> fail("expected ',' or '}'")
                }
            }
        }

        fun array(depth: Int): List<Any?> {
            i++ // [
            val out = ArrayList<Any?>()
            skipSpace()
            if (!atEnd() && s[i] == ']') { i++; return out }
            while (true) {
                skipSpace()
                out.add(value(depth + 1))
                skipSpace()
                if (atEnd()) fail("unterminated array")
                when (s[i]) {
                    ',' -> i++
                    ']' -> { i++; return out }
                    else -> fail("expected ',' or ']'")
                }
            }
        }

        fun string(): String {
            i++ // opening quote
            val sb = StringBuilder()
            while (true) {
                if (atEnd()) fail("unterminated string")
                val c = s[i++]
                when {
                    c == '"' -> return sb.toString()
                    c == '\\' -> {
                        if (atEnd()) fail("unterminated escape")
                        when (val e = s[i++]) {
                            '"' -> sb.append('"'); '\\' -> sb.append('\\'); '/' -> sb.append('/')
                            'b' -> sb.append('\b'); 'f' -> sb.append('\u000C'); 'n' -> sb.append('\n')
                            'r' -> sb.append('\r'); 't' -> sb.append('\t')
                            'u' -> {
                                if (i + 4 > s.length) fail("short \\u escape")
                                val code = s.substring(i, i + 4).toIntOrNull(16) ?: fail("bad \\u escape")
                                sb.append(code.toChar())
                                i += 4
                            }
                            else -> fail("bad escape '\\$e'")
                        }
                    }
                    c < ' ' -> fail("control character in string")
                    else -> sb.append(c)
                }
            }
        }

        fun number(): Any {
            val start = i
            if (s[i] == '-') i++
            if (atEnd() || s[i] !in '0'..'9') fail("expected a digit")
            while (i < s.length && s[i] in '0'..'9') i++
            var integral = true
            if (i < s.length && s[i] == '.') {
                integral = false; i++
                if (atEnd() || s[i] !in '0'..'9') fail("expected a digit after '.'")
                while (i < s.length && s[i] in '0'..'9') i++
            }
            if (i < s.length && (s[i] == 'e' || s[i] == 'E')) {
                integral = false; i++
                if (i < s.length && (s[i] == '+' || s[i] == '-')) i++
                if (atEnd() || s[i] !in '0'..'9') fail("expected an exponent digit")
                while (i < s.length && s[i] in '0'..'9') i++
            }
            val text = s.substring(start, i)
            return if (integral) text.toLongOrNull() ?: text.toDouble() else text.toDouble()
        }
    }
}

/** Typed access to parsed JSON with messages that name the missing or mistyped field. */
class JsonPath(private val value: Any?, private val path: String) {
    private fun fail(why: String): Nothing = throw MiniVlmException(ErrorKind.BAD_FILE, "$path: $why")

    operator fun get(key: String): JsonPath {
        val m = value as? Map<*, *> ?: fail("expected an object")
        if (!m.containsKey(key)) fail("missing key '$key'")
        return JsonPath(m[key], "$path.$key")
    }

    fun opt(key: String): JsonPath? = (value as? Map<*, *>)?.let { if (it.containsKey(key) && it[key] != null) JsonPath(it[key], "$path.$key") else null }

    operator fun get(index: Int): JsonPath {
        val l = value as? List<*> ?: fail("expected an array")
        if (index !in l.indices) fail("index $index out of ${l.size}")
        return JsonPath(l[index], "$path[$index]")
    }

    val raw: Any? get() = value
    val string: String get() = value as? String ?: fail("expected a string")
    val long: Long get() = (value as? Long) ?: fail("expected an integer")
    val int: Int get() = long.let { if (it in Int.MIN_VALUE..Int.MAX_VALUE) it.toInt() else fail("integer $it out of range") }
    val double: Double get() = (value as? Number)?.toDouble() ?: fail("expected a number")
    val bool: Boolean get() = value as? Boolean ?: fail("expected true or false")
    val list: List<JsonPath> get() = (value as? List<*> ?: fail("expected an array")).mapIndexed { i, v -> JsonPath(v, "$path[$i]") }
    val keys: List<String> get() = (value as? Map<*, *> ?: fail("expected an object")).keys.map { it as String }
    val isObject: Boolean get() = value is Map<*, *>
    fun has(key: String): Boolean = (value as? Map<*, *>)?.containsKey(key) == true
}
