package org.facekd.core;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

class JsonTest {
    @Test
    void parsesNestedDocumentKeepingKeyOrder() {
        Object parsed = Json.parse(" {\"b\": [1, -2.5e3, true, null], \"a\": {\"x\": \"y\"}, \"c\": false} ");
        @SuppressWarnings("unchecked")
        Map<String, Object> map = (Map<String, Object>) parsed;
        assertEquals(Arrays.asList("b", "a", "c"), List.copyOf(map.keySet()));
        assertEquals(Arrays.asList(1.0, -2500.0, true, null), map.get("b"));
        assertEquals(Map.of("x", "y"), map.get("a"));
        assertEquals(false, map.get("c"));
    }

    @Test
    void decodesEscapesAndSurrogatePairs() {
        assertEquals("a\"b\\c/d\n\t\u00e9\ud83d\ude00", Json.parse("\"a\\\"b\\\\c\\/d\\n\\t\\u00e9\\ud83d\\ude00\""));
    }

    @Test
    void refusesNonFiniteFloatsWhichAreNotJson() {
        for (String text : new String[] {"[NaN]", "[Infinity]", "[-Infinity]"}) {
            assertThrows(Json.JsonException.class, () -> Json.parse(text), text);
        }
    }

    @Test
    void parsesFloat32ValuesExactly() {
        float value = 0.1234567f;
        Json.Obj obj = Json.Obj.of(Json.parse("{\"v\": [" + (double) value + ", 1e-45]}"), "test");
        assertArrayEquals(new float[] {value, Float.MIN_VALUE}, obj.floats("v"));
    }

    @Test
    void rejectsMalformedInputWithPosition() {
        String[] bad = {"", "{", "[1,]", "{\"a\":1,}", "{\"a\" 1}", "[1 2]", "01", "1.", "-", "\"abc",
            "tru", "{\"a\":1}x", "\"\\x\"", "{a:1}", "[\"\u0001\"]", "{\"k\":1,\"k\":2}"};
        for (String text : bad) {
            Json.JsonException error = assertThrows(Json.JsonException.class, () -> Json.parse(text), text);
            assertTrue(error.getMessage().contains("line 1 column") || error.getMessage().contains("at offset"),
                    error.getMessage());
        }
    }

    @Test
    void reportsLineAndColumn() {
        Json.JsonException error = assertThrows(Json.JsonException.class, () -> Json.parse("{\n  \"a\": tru\n}"));
        assertTrue(error.getMessage().contains("line 2 column"), error.getMessage());
    }

    @Test
    void typedAccessNamesTheOffendingKey() {
        Json.Obj obj = Json.Obj.of(Json.parse("{\"n\": 1.5, \"s\": \"x\", \"o\": {\"shape\": [1, null, 3]}}"), "m.json");
        assertEquals(1.5, obj.number("n"));
        assertArrayEquals(new int[] {1, -1, 3}, obj.object("o").ints("shape"));
        assertEquals("fallback", obj.optString("missing", "fallback"));
        ContractException missing = assertThrows(ContractException.class, () -> obj.string("missing"));
        assertEquals("m.json: 'missing' is missing", missing.getMessage());
        ContractException wrongType = assertThrows(ContractException.class, () -> obj.integer("n"));
        assertTrue(wrongType.getMessage().contains("'n' must be an integer"), wrongType.getMessage());
        ContractException nested = assertThrows(ContractException.class, () -> obj.object("o").string("shape"));
        assertTrue(nested.getMessage().startsWith("m.json.o: 'shape'"), nested.getMessage());
        assertThrows(ContractException.class, () -> Json.Obj.of(Json.parse("[1]"), "doc"));
        assertNull(Json.parse("null"));
    }
}
