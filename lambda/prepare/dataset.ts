/**
 * A dataset folder's listing and its control files. What kohya would refuse in it is checked by
 * preflight.ts, as the training container (containers/training/lora_trainer/dataset.py) checks it.
 */

/** One object of the folder's listing. */
export interface ListedObject {
  readonly key: string;
  readonly size: number;
  readonly lastModified: Date;
}

/**
 * The file the container reads its kohya dataset configuration from. It is not the deploy-time
 * `triggerFileName`: the container reads this name whatever object triggered the run.
 */
export const DATASET_TOML = 'dataset.toml';
export const TRAIN_JSON = 'train.json';
/** train.json and dataset.toml are a few hundred bytes; a megabyte is a mistake, not a configuration. */
export const MAX_CONTROL_FILE_BYTES = 1024 * 1024;

/** The folder's files (folder markers left out), by their path inside the folder. */
export function folderFiles(objects: readonly ListedObject[], prefix: string): Map<string, ListedObject> {
  const files = new Map<string, ListedObject>();
  for (const object of objects) {
    if (object.key.startsWith(prefix) && !object.key.endsWith('/')) files.set(object.key.slice(prefix.length), object);
  }
  return files;
}

/** The object changed last, or undefined for an empty listing. */
export function newest(objects: readonly ListedObject[]): ListedObject | undefined {
  let latest: ListedObject | undefined;
  for (const object of objects) {
    // Ties go to the smaller key, so the reason given is the same on every call.
    if (!latest || object.lastModified > latest.lastModified || (+object.lastModified === +latest.lastModified && object.key < latest.key)) {
      latest = object;
    }
  }
  return latest;
}
