"""Data sets: readers, the decoded-image cache, class alignment, boxes, the data report,
the tf.data pipeline (`tfdata`) and real-photo crops for adaptation (`photos`)."""
