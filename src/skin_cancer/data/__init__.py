"""Data: one image file decoded and validated (images), the collections and their label files
(collections), the copy audit across them (audit), splits and manifests (prepare), external sets
(external), stresses of the test images (shifts) and the tf.data input of training (tf_input)."""
