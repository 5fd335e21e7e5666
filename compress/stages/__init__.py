"""Recipe stages (finetune/train, export, bench); `compress.engine.catalog` lists them."""
