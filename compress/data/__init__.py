"""Data: reading splits in any layout, task data, NER data, augmentation, transfer sets, vocabulary cuts."""
