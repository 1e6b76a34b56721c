package org.facekd.core.golden;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import org.facekd.core.ContractException;
import org.facekd.core.Json;
import org.facekd.core.PreprocessSpec;

/** Parsed {@code golden/golden.json}: reference images, tensors, embeddings and pair decisions. */
public final class GoldenSet {
    public static final int SCHEMA_VERSION = 1;

    /** One reference face. */
    public static final class Item {
        public final String image;
        public final String input;
        public final String identity;
        public final float[] embedding;

        Item(Json.Obj json) {
            image = json.string("image");
            input = json.string("input");
            identity = json.string("identity");
            embedding = json.floats("embedding");
        }
    }

    /** One reference pair and Python's decision for it. */
    public static final class Pair {
        public final int a;
        public final int b;
        public final double cosine;
        public final boolean sameIdentity;
        public final boolean match;

        Pair(Json.Obj json) {
            a = json.integer("a");
            b = json.integer("b");
            cosine = json.number("cosine");
            sameIdentity = json.bool("same_identity");
            match = json.bool("match");
        }
    }

    public final Path dir;
    public final PreprocessSpec preprocess;
    public final double threshold;
    public final List<Item> items;
    public final List<Pair> pairs;

    private GoldenSet(Path dir, Json.Obj json) {
        this.dir = dir;
        int schema = json.integer("schema_version");
        if (schema != SCHEMA_VERSION) {
            throw new ContractException("golden.json schema_version " + schema + ", these tests read "
                    + SCHEMA_VERSION);
        }
        preprocess = PreprocessSpec.fromJson(json.object("preprocess"));
        threshold = json.number("threshold");
        List<Item> itemList = new ArrayList<>();
        for (Json.Obj item : json.objects("items")) {
            itemList.add(new Item(item));
        }
        List<Pair> pairList = new ArrayList<>();
        for (Json.Obj pair : json.objects("pairs")) {
            Pair parsed = new Pair(pair);
            if (parsed.a < 0 || parsed.b < 0 || parsed.a >= itemList.size() || parsed.b >= itemList.size()) {
                throw new ContractException("golden.json pair (" + parsed.a + ", " + parsed.b + ") is out of range");
            }
            pairList.add(parsed);
        }
        if (itemList.isEmpty()) {
            throw new ContractException("golden.json has no items");
        }
        items = Collections.unmodifiableList(itemList);
        pairs = Collections.unmodifiableList(pairList);
    }

    public static GoldenSet read(Path dir) throws IOException {
        Path file = dir.resolve("golden.json");
        String text = new String(Files.readAllBytes(file), StandardCharsets.UTF_8);
        try {
            return new GoldenSet(dir, Json.Obj.of(Json.parse(text), "golden.json"));
        } catch (ContractException e) {
            throw new ContractException(file + ": " + e.getMessage());
        }
    }
}
