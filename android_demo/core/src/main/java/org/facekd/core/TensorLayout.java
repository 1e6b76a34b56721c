package org.facekd.core;

/** Memory order of a batch-1 image tensor: channels-first or channels-last. */
public enum TensorLayout {
    NCHW,
    NHWC;

    static TensorLayout parse(String value, String where) {
        for (TensorLayout layout : values()) {
            if (layout.name().equals(value)) {
                return layout;
            }
        }
        throw new ContractException(where + " must be \"NCHW\" or \"NHWC\", got \"" + value + "\"");
    }
}
