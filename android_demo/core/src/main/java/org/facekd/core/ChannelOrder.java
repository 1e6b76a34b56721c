package org.facekd.core;

/** Order of the three colour channels in the model input. */
public enum ChannelOrder {
    RGB,
    BGR;

    static ChannelOrder parse(String value, String where) {
        for (ChannelOrder order : values()) {
            if (order.name().equals(value)) {
                return order;
            }
        }
        throw new ContractException(where + " must be \"RGB\" or \"BGR\", got \"" + value + "\"");
    }
}
