"""Store: where results go and how they are read back.

``sinks/`` holds one module per destination behind one small contract (``sinks/base.py``);
``query`` and ``report`` read any store the same way; ``registry`` is the sensor registry;
``storage`` the object-store helpers. Never imports detect, stream or pyspark.
"""
