import type { Template } from 'aws-cdk-lib/assertions';
import { synthPipeline } from './support/app';

type Resource = { Type: string; Properties: Record<string, any>; DeletionPolicy?: string; UpdateReplacePolicy?: string };

function resourcesOf(template: Template, type: string): Record<string, Resource> {
  return template.findResources(type) as Record<string, Resource>;
}

/** The logical id of the one resource of a type whose id starts with a prefix. */
function idOf(template: Template, type: string, prefix: string): string {
  const ids = Object.keys(resourcesOf(template, type)).filter((id) => id.startsWith(prefix));
  expect(ids).toHaveLength(1);
  return ids[0];
}

describe('PipelineStorage with the default configuration', () => {
  const { template } = synthPipeline();
  const keyId = idOf(template, 'AWS::KMS::Key', 'StorageDataKey');
  const logsId = idOf(template, 'AWS::S3::Bucket', 'StorageAccessLogsBucket');
  const dataBuckets = {
    datasets: idOf(template, 'AWS::S3::Bucket', 'StorageDatasetsBucket'),
    artifacts: idOf(template, 'AWS::S3::Bucket', 'StorageArtifactsBucket'),
  };
  const buckets = resourcesOf(template, 'AWS::S3::Bucket');
  const policies = Object.values(resourcesOf(template, 'AWS::S3::BucketPolicy'));
  const policyOf = (bucketId: string) => {
    const matching = policies.filter((p) => p.Properties.Bucket?.Ref === bucketId);
    expect(matching).toHaveLength(1);
    return matching[0].Properties.PolicyDocument.Statement as Array<Record<string, any>>;
  };

  test('there is one customer-managed key, with rotation, kept on stack deletion', () => {
    template.resourceCountIs('AWS::KMS::Key', 1);
    const key = resourcesOf(template, 'AWS::KMS::Key')[keyId];
    expect(key.Properties.EnableKeyRotation).toBe(true);
    expect(key.DeletionPolicy).toBe('Retain');
    expect(key.UpdateReplacePolicy).toBe('Retain');
  });

  test('there are exactly three buckets: datasets, artifacts and their access logs', () => {
    expect(Object.keys(buckets).sort()).toEqual([dataBuckets.artifacts, dataBuckets.datasets, logsId].sort());
  });

  describe.each(Object.entries(dataBuckets))('the %s bucket', (name, bucketId) => {
    const props = () => buckets[bucketId].Properties;

    test('is encrypted with the key, with S3 Bucket Keys', () => {
      expect(props().BucketEncryption.ServerSideEncryptionConfiguration).toEqual([
        {
          BucketKeyEnabled: true,
          ServerSideEncryptionByDefault: { SSEAlgorithm: 'aws:kms', KMSMasterKeyID: { 'Fn::GetAtt': [keyId, 'Arn'] } },
        },
      ]);
    });

    test('blocks all public access and disables ACLs', () => {
      expect(props().PublicAccessBlockConfiguration).toEqual({
        BlockPublicAcls: true,
        BlockPublicPolicy: true,
        IgnorePublicAcls: true,
        RestrictPublicBuckets: true,
      });
      expect(props().OwnershipControls).toEqual({ Rules: [{ ObjectOwnership: 'BucketOwnerEnforced' }] });
    });

    test('is versioned', () => {
      expect(props().VersioningConfiguration).toEqual({ Status: 'Enabled' });
    });

    test('logs every request to the access-log bucket, under its own prefix', () => {
      expect(props().LoggingConfiguration).toEqual({ DestinationBucketName: { Ref: logsId }, LogFilePrefix: `${name}/` });
    });

    test('refuses requests without TLS, and TLS older than 1.2', () => {
      const statements = policyOf(bucketId);
      expect(statements).toEqual(
        expect.arrayContaining([
          expect.objectContaining({ Effect: 'Deny', Action: 's3:*', Principal: { AWS: '*' }, Condition: { Bool: { 'aws:SecureTransport': 'false' } } }),
          expect.objectContaining({ Effect: 'Deny', Action: 's3:*', Principal: { AWS: '*' }, Condition: { NumericLessThan: { 's3:TlsVersion': 1.2 } } }),
        ]),
      );
      const denied = statements.filter((s) => s.Effect === 'Deny').flatMap((s) => s.Resource);
      expect(denied).toEqual(expect.arrayContaining([{ 'Fn::GetAtt': [bucketId, 'Arn'] }]));
    });

    test('aborts incomplete multipart uploads and expires noncurrent versions and their delete markers', () => {
      expect(props().LifecycleConfiguration.Rules).toEqual(
        expect.arrayContaining([
          { Id: 'abort-incomplete-multipart-uploads', Status: 'Enabled', AbortIncompleteMultipartUpload: { DaysAfterInitiation: 1 } },
          { Id: 'expire-noncurrent-versions', Status: 'Enabled', NoncurrentVersionExpiration: { NoncurrentDays: 30 }, ExpiredObjectDeleteMarker: true },
        ]),
      );
    });

    test('is kept on stack deletion, and nothing empties it', () => {
      expect(buckets[bucketId].DeletionPolicy).toBe('Retain');
      expect(buckets[bucketId].UpdateReplacePolicy).toBe('Retain');
    });
  });

  test('only the artifacts bucket expires checkpoints, under checkpoints/ only', () => {
    const checkpointRule = {
      Id: 'expire-checkpoints',
      Status: 'Enabled',
      Prefix: 'checkpoints/',
      ExpirationInDays: 7,
      NoncurrentVersionExpiration: { NoncurrentDays: 1 },
    };
    expect(buckets[dataBuckets.artifacts].Properties.LifecycleConfiguration.Rules).toContainEqual(checkpointRule);
    expect(buckets[dataBuckets.datasets].Properties.LifecycleConfiguration.Rules).not.toContainEqual(
      expect.objectContaining({ Id: 'expire-checkpoints' }),
    );
    // A rule with no prefix or filter would expire every object in the bucket.
    for (const rule of buckets[dataBuckets.artifacts].Properties.LifecycleConfiguration.Rules) {
      if (rule.ExpirationInDays !== undefined) expect(rule.Prefix).toBe('checkpoints/');
    }
  });

  test('the access-log bucket is SSE-S3 (log delivery cannot use SSE-KMS), private, TLS-only, and expires logs', () => {
    const logs = buckets[logsId].Properties;
    expect(logs.BucketEncryption.ServerSideEncryptionConfiguration).toEqual([{ ServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } }]);
    expect(logs.PublicAccessBlockConfiguration).toEqual({ BlockPublicAcls: true, BlockPublicPolicy: true, IgnorePublicAcls: true, RestrictPublicBuckets: true });
    expect(logs.OwnershipControls).toEqual({ Rules: [{ ObjectOwnership: 'BucketOwnerEnforced' }] });
    expect(logs.LifecycleConfiguration.Rules).toEqual([
      { Id: 'expire-access-logs', Status: 'Enabled', ExpirationInDays: 365, AbortIncompleteMultipartUpload: { DaysAfterInitiation: 1 } },
    ]);
    expect(logs.LoggingConfiguration).toBeUndefined();
    expect(policyOf(logsId)).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ Effect: 'Deny', Action: 's3:*', Principal: { AWS: '*' }, Condition: { Bool: { 'aws:SecureTransport': 'false' } } }),
        expect.objectContaining({ Effect: 'Deny', Action: 's3:*', Principal: { AWS: '*' }, Condition: { NumericLessThan: { 's3:TlsVersion': 1.2 } } }),
      ]),
    );
    // Log delivery is granted by bucket policy, each grant scoped to one source bucket of this account.
    const deliveries = policyOf(logsId).filter((s) => s.Effect === 'Allow');
    expect(deliveries).toEqual(
      Object.entries(dataBuckets).map(([name, bucketId]) => ({
        Effect: 'Allow',
        Principal: { Service: 'logging.s3.amazonaws.com' },
        Action: 's3:PutObject',
        Resource: { 'Fn::Join': ['', [{ 'Fn::GetAtt': [logsId, 'Arn'] }, `/${name}/*`]] },
        Condition: { ArnLike: { 'aws:SourceArn': { 'Fn::GetAtt': [bucketId, 'Arn'] } }, StringEquals: { 'aws:SourceAccount': { Ref: 'AWS::AccountId' } } },
      })),
    );
  });

  test('the bucket policies are kept with the buckets, so a retained bucket keeps its TLS rule and log grant', () => {
    for (const policy of policies) {
      expect(policy.DeletionPolicy).toBe('Retain');
      expect(policy.UpdateReplacePolicy).toBe('Retain');
    }
    expect(policies).toHaveLength(3);
  });

  test('no auto-delete machinery exists when data is retained', () => {
    template.resourceCountIs('Custom::S3AutoDeleteObjects', 0);
  });

  test('outputs the bucket names and the key ARN', () => {
    template.hasOutput('DatasetsBucketName', { Value: { Ref: dataBuckets.datasets } });
    template.hasOutput('ArtifactsBucketName', { Value: { Ref: dataBuckets.artifacts } });
    template.hasOutput('DataKeyArn', { Value: { 'Fn::GetAtt': [keyId, 'Arn'] } });
  });
});

describe('PipelineStorage with overrides', () => {
  test('removalPolicy=destroy deletes the key and buckets, emptying the buckets first', () => {
    const { template } = synthPipeline({ removalPolicy: 'destroy' });
    for (const type of ['AWS::KMS::Key', 'AWS::S3::Bucket', 'AWS::S3::BucketPolicy']) {
      for (const resource of Object.values(resourcesOf(template, type))) expect(resource.DeletionPolicy).toBe('Delete');
    }
    template.resourceCountIs('Custom::S3AutoDeleteObjects', 3);
  });

  test('expiry periods follow the configuration', () => {
    const { template } = synthPipeline({
      'storage.checkpointExpirationDays': 3,
      'storage.noncurrentVersionExpirationDays': 10,
      'storage.accessLogExpirationDays': 30,
    });
    const rules = Object.values(resourcesOf(template, 'AWS::S3::Bucket')).flatMap((b) => b.Properties.LifecycleConfiguration.Rules);
    expect(rules).toContainEqual(expect.objectContaining({ Id: 'expire-checkpoints', ExpirationInDays: 3 }));
    expect(rules).toContainEqual(expect.objectContaining({ Id: 'expire-noncurrent-versions', NoncurrentVersionExpiration: { NoncurrentDays: 10 } }));
    expect(rules).toContainEqual(expect.objectContaining({ Id: 'expire-access-logs', ExpirationInDays: 30 }));
  });
});
