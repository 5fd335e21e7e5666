"""Recipe stages (finetune/train, export, bench); `compress.catalog` lists them."""
