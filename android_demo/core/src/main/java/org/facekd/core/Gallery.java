package org.facekd.core;

import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Enrolled people, each with one or more L2-normalised embedding templates (thread-safe).
 *
 * <p>A gallery belongs to one model: templates from another model live in another embedding
 * space and are not comparable, so the model's sha256 and embedding size are part of it.
 */
public final class Gallery {
    private final String modelSha256;
    private final int dimension;
    private final Map<String, List<float[]>> people = new LinkedHashMap<>();

    public Gallery(String modelSha256, int dimension) {
        if (dimension <= 0) {
            throw new IllegalArgumentException("embedding dimension must be positive, got " + dimension);
        }
        this.modelSha256 = modelSha256;
        this.dimension = dimension;
    }

    /** Adds a template for {@code name} (created if new); the embedding is L2-normalised. */
    public synchronized void enrol(String name, float[] embedding) {
        String key = checkName(name);
        if (embedding.length != dimension) {
            throw new IllegalArgumentException("embedding has " + embedding.length + " values, gallery expects "
                    + dimension);
        }
        people.computeIfAbsent(key, k -> new ArrayList<>()).add(Embeddings.l2Normalize(embedding));
    }

    /** Removes a person and all their templates; false if unknown. */
    public synchronized boolean delete(String name) {
        return people.remove(name) != null;
    }

    /** Removes one template; the person goes when their last template does. False if absent. */
    public synchronized boolean deleteTemplate(String name, int index) {
        List<float[]> templates = people.get(name);
        if (templates == null || index < 0 || index >= templates.size()) {
            return false;
        }
        templates.remove(index);
        if (templates.isEmpty()) {
            people.remove(name);
        }
        return true;
    }

    /** Names in enrolment order. */
    public synchronized List<String> names() {
        return new ArrayList<>(people.keySet());
    }

    public synchronized int templateCount(String name) {
        List<float[]> templates = people.get(name);
        return templates == null ? 0 : templates.size();
    }

    /** Number of templates of everyone: the comparisons one probe makes (what 1:N thresholds depend on). */
    public synchronized int templateCount() {
        int count = 0;
        for (List<float[]> templates : people.values()) {
            count += templates.size();
        }
        return count;
    }

    /** Number of people. */
    public synchronized int size() {
        return people.size();
    }

    /** A deep copy: name → templates, in enrolment order. */
    public synchronized Map<String, List<float[]>> snapshot() {
        Map<String, List<float[]>> copy = new LinkedHashMap<>();
        for (Map.Entry<String, List<float[]>> entry : people.entrySet()) {
            List<float[]> templates = new ArrayList<>();
            for (float[] template : entry.getValue()) {
                templates.add(template.clone());
            }
            copy.put(entry.getKey(), Collections.unmodifiableList(templates));
        }
        return Collections.unmodifiableMap(copy);
    }

    public String modelSha256() {
        return modelSha256;
    }

    public int dimension() {
        return dimension;
    }

    /** Adds an already-normalised template as stored on disk (used by {@link GalleryStore}). */
    synchronized void restore(String name, float[] template) {
        people.computeIfAbsent(name, k -> new ArrayList<>()).add(template);
    }

    private static String checkName(String name) {
        String trimmed = name == null ? "" : name.trim();
        if (trimmed.isEmpty()) {
            throw new IllegalArgumentException("a person needs a non-empty name");
        }
        for (int i = 0; i < trimmed.length(); i++) {
            if (Character.isISOControl(trimmed.charAt(i))) {
                throw new IllegalArgumentException("names cannot contain control characters");
            }
        }
        return trimmed;
    }
}
