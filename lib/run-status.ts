import { ArnFormat, Duration, type RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import type * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as logs from 'aws-cdk-lib/aws-logs';
import type * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import { LoraRegistry } from './lora-registry';
import { iamFindingArn } from './nag-findings';
import { PipelineFunction } from './pipeline-function';

/** Properties of {@link RunStatus}. */
export interface RunStatusProps {
  /** The workflow whose runs the function reports on. */
  readonly stateMachine: sfn.StateMachine;
  /** The LoRA registry's table: a shared run's version is shown with its status there and whether it is current. */
  readonly registry: dynamodb.ITable;
  /** First part of every run and endpoint name (the workflow's resources). */
  readonly namePrefix: string;
  /** Grants the reads the function's links to samples and smoke images need (lib/lora-workflow.ts). */
  readonly artifacts: { grantArtifactLinks(role: iam.IRole): void };
  readonly logRetention: logs.RetentionDays;
  readonly removalPolicy: RemovalPolicy;
}

/**
 * The status function: "where is my run?" for one execution, a dataset's latest runs, or the latest
 * runs. It only reads: the workflow's executions and history, the runs' training jobs and endpoints,
 * the registry's items of the versions shared runs registered, and (through the links it signs)
 * the runs' samples and smoke images.
 */
export class RunStatus extends Construct {
  public readonly status: PipelineFunction;

  constructor(scope: Construct, id: string, props: RunStatusProps) {
    super(scope, id);
    const stack = Stack.of(this);
    this.status = new PipelineFunction(this, 'Status', {
      name: 'status',
      description: 'Answers where a run is: its phase, training job, endpoint and LoRA version',
      environment: { STATE_MACHINE_ARN: props.stateMachine.stateMachineArn, LORA_REGISTRY_TABLE: props.registry.tableName },
      // A list answer reads up to 10 executions' histories, each event carrying the run's state.
      timeout: Duration.seconds(60),
      memorySize: 512,
      logRetention: props.logRetention,
      removalPolicy: props.removalPolicy,
    });
    const executions = stack.formatArn({
      service: 'states',
      resource: 'execution',
      resourceName: `${props.stateMachine.stateMachineName}:*`,
      arnFormat: ArnFormat.COLON_RESOURCE_NAME,
    });
    const sagemaker = (resource: string) => stack.formatArn({ service: 'sagemaker', resource, resourceName: `${props.namePrefix}-*` });
    const statements: Array<[string, string[], string[]]> = [
      ['ListRuns', ['states:ListExecutions'], [props.stateMachine.stateMachineArn]],
      ['ReadRuns', ['states:DescribeExecution', 'states:GetExecutionHistory'], [executions]],
      ['ReadTrainingJobs', ['sagemaker:DescribeTrainingJob'], [sagemaker('training-job')]],
      ['ReadEndpoints', ['sagemaker:DescribeEndpoint'], [sagemaker('endpoint')]],
    ];
    for (const [sid, actions, resources] of statements) {
      this.status.role.addToPrincipalPolicy(new iam.PolicyStatement({ sid, actions, resources }));
    }
    LoraRegistry.grantReadOnly(props.registry, this.status.role);
    // Its presigned links work only if its role may read what they point to.
    props.artifacts.grantArtifactLinks(this.status.role);
    Validations.of(this.status.role.node.findChild('DefaultPolicy')).acknowledge(
      {
        id: `AwsSolutions-IAM5[Resource::${iamFindingArn(this, executions)}]`,
        reason: 'Execution names are chosen per run (by the kickoff function or whoever starts one); the function reads executions of this state machine only.',
      },
      ...['training-job', 'endpoint'].map((resource) => ({
        id: `AwsSolutions-IAM5[Resource::${iamFindingArn(this, sagemaker(resource))}]`,
        reason: `Run and endpoint names are chosen per run, all under the stack's prefix; the function describes only those ${resource}s.`,
      })),
    );
  }
}
