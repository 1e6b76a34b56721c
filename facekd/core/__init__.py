"""What every stage and the bench worker share, importing numpy and OpenCV at most (never torch):
preprocessing spec, image folders and pairs readers, verification metrics and operating points,
atomic IO and hashing, the error base, the libraries' chatter switch."""
