"""Convert an image-caption JSON in the CUHK-PEDES format to a Hugging Face dataset with the images embedded.

    python dataset_scripts/convert_captions.py /data/CUHK-PEDES --keep-split train --out captions_hf
    python dataset_scripts/convert_captions.py /data/CUHK-PEDES --keep-split train --out captions_pq --format parquet
    python dataset_scripts/convert_captions.py /data/CUHK-PEDES --keep-split train --push-to-hub ORG/captions

Map other caption files with --id-field, --path-field and --captions-field.
Run with --help for every option. The reading logic is hf_reid.data.load_reid_dataset("captions", ...);
saving, pushing and the dataset card are in hf_reid.data.export.
"""

from hf_reid.data.export import run_converter

if __name__ == "__main__":
    print(run_converter("captions", description=__doc__))
