package org.facekd.core;

import com.google.gson.stream.JsonReader;
import com.google.gson.stream.JsonToken;
import com.google.gson.stream.MalformedJsonException;
import java.io.EOFException;
import java.io.IOException;
import java.io.StringReader;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Strict JSON (RFC 8259) for manifests and golden files, read with Gson's streaming
 * {@link JsonReader}, plus typed, path-aware access ({@link Obj}).
 *
 * <p>Objects become {@code Map<String, Object>} (insertion order kept), arrays {@code List<Object>},
 * numbers {@code Double}, plus {@code String}, {@code Boolean} and {@code null}. Refused with
 * {@link JsonException}: malformed text (Gson's message, with line and column), a duplicate key,
 * nesting deeper than {@link #MAX_DEPTH}, text after the value, raw control characters, and the
 * non-JSON {@code NaN}/{@code Infinity} (Python writes them only for a value it could not measure,
 * e.g. the parity of a broken artifact, whose manifest an app must not use anyway).
 */
public final class Json {
    /** Deeper nesting is refused: a manifest is 3 levels deep, and recursion must not overflow the stack. */
    static final int MAX_DEPTH = 64;

    private Json() {}

    public static Object parse(String text) {
        for (int i = 0; i < text.length(); i++) { // RFC 8259: control characters only as escapes
            char c = text.charAt(i);
            if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') {
                throw new JsonException(String.format("unescaped control character U+%04X at offset %d", (int) c, i));
            }
        }
        JsonReader reader = new JsonReader(new StringReader(text));
        reader.setLenient(false);
        try {
            Object value = read(reader, 0);
            if (reader.peek() != JsonToken.END_DOCUMENT) {
                throw error(reader, "unexpected text after the JSON value");
            }
            return value;
        } catch (EOFException e) {
            throw new JsonException("unexpected end of input" + where(reader));
        } catch (MalformedJsonException | IllegalStateException | NumberFormatException e) {
            throw new JsonException(e.getMessage() == null ? "malformed JSON" + where(reader) : e.getMessage());
        } catch (IOException e) {
            throw new JsonException("cannot read JSON: " + e.getMessage());
        }
    }

    private static Object read(JsonReader reader, int depth) throws IOException {
        JsonToken token = reader.peek();
        switch (token) {
            case BEGIN_OBJECT: {
                checkDepth(reader, depth);
                Map<String, Object> object = new LinkedHashMap<>();
                reader.beginObject();
                while (reader.hasNext()) {
                    String key = reader.nextName();
                    if (object.containsKey(key)) {
                        throw error(reader, "duplicate key \"" + key + "\"");
                    }
                    object.put(key, read(reader, depth + 1));
                }
                reader.endObject();
                return object;
            }
            case BEGIN_ARRAY: {
                checkDepth(reader, depth);
                List<Object> array = new ArrayList<>();
                reader.beginArray();
                while (reader.hasNext()) {
                    array.add(read(reader, depth + 1));
                }
                reader.endArray();
                return array;
            }
            case STRING:
                return reader.nextString();
            case NUMBER:
                return reader.nextDouble();
            case BOOLEAN:
                return reader.nextBoolean();
            case NULL:
                reader.nextNull();
                return null;
            default:
                throw error(reader, "unexpected " + token);
        }
    }

    private static void checkDepth(JsonReader reader, int depth) {
        if (depth >= MAX_DEPTH) {
            throw error(reader, "nested deeper than " + MAX_DEPTH + " levels");
        }
    }

    private static String where(JsonReader reader) {
        String described = reader.toString(); // "JsonReader at line L column C path $..."
        int at = described.indexOf(" at line ");
        return at < 0 ? "" : described.substring(at);
    }

    private static JsonException error(JsonReader reader, String message) {
        return new JsonException(message + where(reader));
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
