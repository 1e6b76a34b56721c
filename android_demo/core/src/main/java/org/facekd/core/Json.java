package org.facekd.core;

import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A small strict JSON (RFC 8259) parser, enough for manifests and golden files.
 *
 * <p>Objects become {@code Map<String, Object>} (insertion order kept), arrays {@code List<Object>},
 * numbers {@code Double}, plus {@code String}, {@code Boolean} and {@code null}. Python's
 * {@code json.dumps} writes {@code NaN}/{@code Infinity} for non-finite floats; those are accepted
 * too, since a manifest may carry them (e.g. a parity value that could not be computed).
 */
public final class Json {
    /** Deeper nesting is refused: a manifest is 3 levels deep, and recursion must not overflow the stack. */
    static final int MAX_DEPTH = 64;

    private final String text;
    private int pos;
    private int depth;

    private Json(String text) {
        this.text = text;
    }

    /** Parses one JSON document; anything but whitespace after it is an error. */
    public static Object parse(String text) {
        Json parser = new Json(text);
        parser.skipWhitespace();
        Object value = parser.readValue();
        parser.skipWhitespace();
        if (parser.pos != text.length()) {
            throw parser.error("unexpected text after the JSON value");
        }
        return value;
    }

    private Object readValue() {
        if (pos >= text.length()) {
            throw error("unexpected end of input");
        }
        char c = text.charAt(pos);
        switch (c) {
            case '{':
            case '[':
                if (++depth > MAX_DEPTH) {
                    throw error("nested deeper than " + MAX_DEPTH + " levels");
                }
                Object nested = c == '{' ? readObject() : readArray();
                depth--;
                return nested;
            case '"':
                return readString();
            case 't':
                expectWord("true");
                return Boolean.TRUE;
            case 'f':
                expectWord("false");
                return Boolean.FALSE;
            case 'n':
                expectWord("null");
                return null;
            case 'N':
                expectWord("NaN");
                return Double.NaN;
            case 'I':
                expectWord("Infinity");
                return Double.POSITIVE_INFINITY;
            default:
                if (c == '-' || (c >= '0' && c <= '9')) {
                    return readNumber();
                }
                throw error("unexpected character '" + c + "'");
        }
    }

    private Map<String, Object> readObject() {
        Map<String, Object> object = new LinkedHashMap<>();
        pos++; // '{'
        skipWhitespace();
        if (peek() == '}') {
            pos++;
            return object;
        }
        while (true) {
            skipWhitespace();
            if (peek() != '"') {
                throw error("expected a quoted key");
            }
            String key = readString();
            skipWhitespace();
            expect(':');
            skipWhitespace();
            if (object.containsKey(key)) {
                throw error("duplicate key \"" + key + "\"");
            }
            object.put(key, readValue());
            skipWhitespace();
            char c = next();
            if (c == '}') {
                return object;
            }
            if (c != ',') {
                pos--;
                throw error("expected ',' or '}'");
            }
        }
    }

    private List<Object> readArray() {
        List<Object> array = new ArrayList<>();
        pos++; // '['
        skipWhitespace();
        if (peek() == ']') {
            pos++;
            return array;
        }
        while (true) {
            skipWhitespace();
            array.add(readValue());
            skipWhitespace();
            char c = next();
            if (c == ']') {
                return array;
            }
            if (c != ',') {
                pos--;
                throw error("expected ',' or ']'");
            }
        }
    }

    private String readString() {
        pos++; // opening quote
        StringBuilder out = new StringBuilder();
        while (true) {
            if (pos >= text.length()) {
                throw error("unterminated string");
            }
            char c = text.charAt(pos++);
            if (c == '"') {
                return out.toString();
            }
            if (c < 0x20) {
                pos--;
                throw error("control character in string");
            }
            if (c != '\\') {
                out.append(c);
                continue;
            }
            char escaped = next();
            switch (escaped) {
                case '"': out.append('"'); break;
                case '\\': out.append('\\'); break;
                case '/': out.append('/'); break;
                case 'b': out.append('\b'); break;
                case 'f': out.append('\f'); break;
                case 'n': out.append('\n'); break;
                case 'r': out.append('\r'); break;
                case 't': out.append('\t'); break;
                case 'u': out.append(readHex4()); break;
                default:
                    pos--;
                    throw error("bad escape '\\" + escaped + "'");
            }
        }
    }

    private char readHex4() {
        if (pos + 4 > text.length()) {
            throw error("truncated \\u escape");
        }
        int value = 0;
        for (int i = 0; i < 4; i++) {
            int digit = Character.digit(text.charAt(pos + i), 16);
            if (digit < 0) {
                throw error("bad \\u escape");
            }
            value = value * 16 + digit;
        }
        pos += 4;
        return (char) value;
    }

    private Double readNumber() {
        int start = pos;
        if (peek() == '-') {
            pos++;
            if (peek() == 'I') {
                expectWord("Infinity");
                return Double.NEGATIVE_INFINITY;
            }
        }
        if (peek() == '0') {
            pos++;
        } else if (isDigit(peek())) {
            skipDigits();
        } else {
            throw error("bad number");
        }
        if (peek() == '.') {
            pos++;
            if (!isDigit(peek())) {
                throw error("bad number: digits must follow '.'");
            }
            skipDigits();
        }
        if (peek() == 'e' || peek() == 'E') {
            pos++;
            if (peek() == '+' || peek() == '-') {
                pos++;
            }
            if (!isDigit(peek())) {
                throw error("bad number: digits must follow the exponent");
            }
            skipDigits();
        }
        return Double.parseDouble(text.substring(start, pos));
    }

    private void skipDigits() {
        while (isDigit(peek())) {
            pos++;
        }
    }

    private static boolean isDigit(char c) {
        return c >= '0' && c <= '9';
    }

    private void expectWord(String word) {
        if (!text.startsWith(word, pos)) {
            throw error("expected '" + word + "'");
        }
        pos += word.length();
    }

    private void expect(char c) {
        if (peek() != c) {
            throw error("expected '" + c + "'");
        }
        pos++;
    }

    private char peek() {
        return pos < text.length() ? text.charAt(pos) : '\0';
    }

    private char next() {
        if (pos >= text.length()) {
            throw error("unexpected end of input");
        }
        return text.charAt(pos++);
    }

    private void skipWhitespace() {
        while (pos < text.length()) {
            char c = text.charAt(pos);
            if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
                return;
            }
            pos++;
        }
    }

    private JsonException error(String message) {
        int line = 1;
        int column = 1;
        for (int i = 0; i < Math.min(pos, text.length()); i++) {
            if (text.charAt(i) == '\n') {
                line++;
                column = 1;
            } else {
                column++;
            }
        }
        return new JsonException(message + " at line " + line + ", column " + column);
    }

    /** Malformed JSON text. */
    public static final class JsonException extends ContractException {
        private static final long serialVersionUID = 1L;

        JsonException(String message) {
            super(message);
        }
    }

    /** Typed, path-aware access to a parsed JSON object; errors name the offending key. */
    public static final class Obj {
        private final Map<String, Object> map;
        private final String path;

        private Obj(Map<String, Object> map, String path) {
            this.map = Collections.unmodifiableMap(map);
            this.path = path;
        }

        /** Wraps a parsed document that must be an object; {@code what} names it in errors. */
        @SuppressWarnings("unchecked")
        public static Obj of(Object parsed, String what) {
            if (!(parsed instanceof Map)) {
                throw new ContractException(what + " must be a JSON object");
            }
            return new Obj((Map<String, Object>) parsed, what);
        }

        public boolean has(String key) {
            return map.containsKey(key) && map.get(key) != null;
        }

        public Map<String, Object> asMap() {
            return map;
        }

        private Object require(String key) {
            if (!map.containsKey(key)) {
                throw new ContractException(where(key) + " is missing");
            }
            Object value = map.get(key);
            if (value == null) {
                throw new ContractException(where(key) + " is null");
            }
            return value;
        }

        private String where(String key) {
            return path + ": '" + key + "'";
        }

        public Obj object(String key) {
            Object value = require(key);
            if (!(value instanceof Map)) {
                throw new ContractException(where(key) + " must be an object");
            }
            return of(value, path + "." + key);
        }

        public String string(String key) {
            Object value = require(key);
            if (!(value instanceof String)) {
                throw new ContractException(where(key) + " must be a string, got " + value);
            }
            return (String) value;
        }

        public String optString(String key, String fallback) {
            return has(key) ? string(key) : fallback;
        }

        public double number(String key) {
            Object value = require(key);
            if (!(value instanceof Double)) {
                throw new ContractException(where(key) + " must be a number, got " + value);
            }
            return (Double) value;
        }

        public int integer(String key) {
            double value = number(key);
            if (value != Math.rint(value) || Math.abs(value) > Integer.MAX_VALUE) {
                throw new ContractException(where(key) + " must be an integer, got " + value);
            }
            return (int) value;
        }

        public boolean bool(String key) {
            Object value = require(key);
            if (!(value instanceof Boolean)) {
                throw new ContractException(where(key) + " must be true or false, got " + value);
            }
            return (Boolean) value;
        }

        public List<Object> array(String key) {
            Object value = require(key);
            if (!(value instanceof List)) {
                throw new ContractException(where(key) + " must be an array");
            }
            @SuppressWarnings("unchecked")
            List<Object> list = (List<Object>) value;
            return list;
        }

        /** Array of numbers as float32 (the cast Python's {@code np.float32} would make). */
        public float[] floats(String key) {
            List<Object> list = array(key);
            float[] out = new float[list.size()];
            for (int i = 0; i < out.length; i++) {
                Object item = list.get(i);
                if (!(item instanceof Double)) {
                    throw new ContractException(where(key) + "[" + i + "] must be a number, got " + item);
                }
                out[i] = (float) (double) (Double) item;
            }
            return out;
        }

        /** Array of integers; {@code null} entries (dynamic dimensions) become -1. */
        public int[] ints(String key) {
            List<Object> list = array(key);
            int[] out = new int[list.size()];
            for (int i = 0; i < out.length; i++) {
                Object item = list.get(i);
                if (item == null) {
                    out[i] = -1;
                } else if (item instanceof Double && (Double) item == Math.rint((Double) item)) {
                    out[i] = (int) (double) (Double) item;
                } else {
                    throw new ContractException(where(key) + "[" + i + "] must be an integer, got " + item);
                }
            }
            return out;
        }

        /** Elements of an array that must all be objects. */
        public List<Obj> objects(String key) {
            List<Object> list = array(key);
            List<Obj> out = new ArrayList<>(list.size());
            for (int i = 0; i < list.size(); i++) {
                Object item = list.get(i);
                if (!(item instanceof Map)) {
                    throw new ContractException(where(key) + "[" + i + "] must be an object");
                }
                out.add(of(item, path + "." + key + "[" + i + "]"));
            }
            return out;
        }
    }
}
